"""Run reports and method comparisons over ``openrft run`` directories.

:func:`load_run` reads a run directory; :func:`write_run_report` writes its ``report.md`` /
``report.html`` with plots; :func:`compare` builds the method x task table over several runs.
"""

from openrft.core.rundir import IncompatibleRunError
from openrft.report.compare import Comparison, compare, compare_runs
from openrft.report.run import Cell, Run, RunDirError, StageInfo, eval_result_from_dict, load_run
from openrft.report.run_report import write_run_report

__all__ = ["Cell", "Comparison", "IncompatibleRunError", "Run", "RunDirError", "StageInfo", "compare",
           "compare_runs", "eval_result_from_dict", "load_run", "write_run_report"]
