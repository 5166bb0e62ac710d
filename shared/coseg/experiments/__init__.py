"""The paper's analyses as runnable experiments: ablations (Tables 7, 8), λ and number of passes (Fig. 8), domain
shift (Table 10), limited annotation (Table 11), training curves (Fig. 9) and prompt / attention maps (Fig. 10).

Each experiment is a JSON file of bundle overrides in ``<bundle>/configs/experiments/``; every run trains through the
bundle's ``train.json`` and is tested through ``evaluate.json``. Command line: ``python -m coseg.experiments``
(``list``, ``run``, ``plan``, ``table``, ``attention``); see ``bundles/coseg_histo/docs/experiments.md``.
"""

from coseg.experiments.attention import (
    attention_maps,
    heat_overlay,
    load_network,
    run_attention,
    write_attention_figures,
)
from coseg.experiments.plot import Panel, Series, draw_line_plot
from coseg.experiments.runner import (
    ExperimentResult,
    ExperimentSettings,
    RunPlan,
    check_override_keys,
    collect_results,
    evaluate_run,
    plan_runs,
    prepare_output,
    run_experiment,
    train_run,
)
from coseg.experiments.spec import (
    ExperimentSpec,
    PlotPanel,
    PlotSpec,
    RowSpec,
    list_experiments,
    load_experiment,
    parse_experiment,
)
from coseg.experiments.stats import PairedTest, paired_test
from coseg.experiments.tables import COLUMN_GROUPS, Column, table_columns

__all__ = [
    "COLUMN_GROUPS",
    "Column",
    "ExperimentResult",
    "ExperimentSettings",
    "ExperimentSpec",
    "PairedTest",
    "Panel",
    "PlotPanel",
    "PlotSpec",
    "RowSpec",
    "RunPlan",
    "Series",
    "attention_maps",
    "check_override_keys",
    "collect_results",
    "draw_line_plot",
    "evaluate_run",
    "heat_overlay",
    "list_experiments",
    "load_experiment",
    "load_network",
    "paired_test",
    "parse_experiment",
    "plan_runs",
    "prepare_output",
    "run_attention",
    "run_experiment",
    "table_columns",
    "train_run",
    "write_attention_figures",
]
