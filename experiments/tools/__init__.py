"""Tools: reference files for the tests, and the lent accelerator's session scripts."""
