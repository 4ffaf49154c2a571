"""Tasks: what `python -m lensfm.main` runs, one module per `config.task`, each with
`run(config, workdir) -> dict` (the summary it also writes to the workdir)."""
from lensfm.tasks import bench
from lensfm.tasks import evaluate
from lensfm.tasks import export
from lensfm.tasks import finetune
from lensfm.tasks import knn
from lensfm.tasks import predict
from lensfm.tasks import pretrain

TASKS = {
    "pretrain": pretrain,
    "finetune": finetune,
    "evaluate": evaluate,
    "predict": predict,
    "knn": knn,
    "bench": bench,
    "export": export,
}
