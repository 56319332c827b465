"""The ``bnlab`` command line: every subcommand, its options and its handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from bnlab import __version__
from bnlab.cli.commands import cmd_data, cmd_report, cmd_runs, cmd_show, cmd_summary
from bnlab.cli.deploy import cmd_export, cmd_predict, cmd_recalibrate
from bnlab.cli.run import cmd_probe, cmd_run
from bnlab.cli.session import env_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnlab", description="Run, understand and compare Batch Normalization experiments."
    )
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data_options = argparse.ArgumentParser(add_help=False)
    data_options.add_argument(
        "--data-dir", type=Path, default=env_path("BNLAB_DATA_DIR"),
        help="folder holding the four Fashion-MNIST .gz files (env BNLAB_DATA_DIR); "
             "default: user cache, then /usr/share/datasets, then download")
    data_options.add_argument(
        "--cache-dir", type=Path, default=env_path("BNLAB_CACHE_DIR"),
        help="bnlab's cache (downloads, compiled programs); env BNLAB_CACHE_DIR")
    data_options.add_argument("--no-download", action="store_true",
                              help="never download; fail if the files are not on disk")

    p = sub.add_parser("data", parents=[data_options],
                       help="find and verify the dataset files; show where each came from")
    p.set_defaults(handler=cmd_data)

    p = sub.add_parser("summary", help="Keras-style summary of a model preset, or of every "
                                       "variant of an experiment file or preset")
    p.add_argument("model", help="baseline, bn_after or bn_before; or an experiment file or "
                                 "preset (e.g. seed)")
    p.set_defaults(handler=cmd_summary)

    run_options = argparse.ArgumentParser(add_help=False, parents=[data_options])
    run_options.add_argument("--seeds", type=int, help="number of seeds (overrides the file)")
    run_options.add_argument("--epochs", type=int, help="epochs (overrides the file)")
    run_options.add_argument("--train-rows", type=int, metavar="N",
                             help="train on the first N training rows only, a quick run (a "
                                  "resume needs the same)")
    run_options.add_argument("--runs-dir", type=Path, default=Path("runs"),
                             help="where run folders are written (default ./runs)")
    run_options.add_argument("--resume", action="store_true",
                             help="continue (or repair) the newest unfinished or damaged run "
                                  "of this experiment; retrains only what is unfinished or "
                                  "damaged")
    run_options.add_argument("--retry-diverged", action="store_true",
                             help="with --resume: retrain the variants that diverged too")
    run_options.add_argument("--set", action="append", dest="settings", default=[],
                             metavar="KEY=VALUE",
                             help="change the experiment for this run, as a TOML line: "
                                  "epochs=2, optimizer.learning_rate=0.1, "
                                  "'sweep.\"optimizer.learning_rate\"=[0.01, 0.1]' "
                                  "(repeatable; a resume needs the same)")

    p = sub.add_parser("seed", parents=[run_options],
                       help="reproduce the notebook: baseline, bn_after, bn_before")
    p.set_defaults(handler=cmd_run, experiment="seed")

    p = sub.add_parser("run", parents=[run_options], help="run an experiment file or preset "
                                                          "(with its [sweep], if it has one)")
    p.add_argument("experiment", help="path to a TOML experiment file, or a preset name")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("sweep", parents=[run_options],
                       help="run the [sweep] of an experiment file or preset (e.g. "
                            "lr-robustness): its points × seeds, one program per shape")
    p.add_argument("experiment", help="path to a TOML experiment file with a [sweep] table, or "
                                      "a preset name")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="train the programs as tasks on an existing Ray cluster (`ray start "
                        "--head`; ADDRESS as it printed, default auto); the runs folder must "
                        "be shared by its nodes (extra: pip install 'bnlab[ray]')")
    p.set_defaults(handler=cmd_run, needs_sweep=True)

    p = sub.add_parser("probe", parents=[run_options],
                       help="train an experiment with Santurkar et al.'s measures recorded "
                            "(ICS, loss landscape), or retrain a run with them and check it "
                            "follows the same trajectory")
    p.add_argument("experiment", help="a run folder (or a run's name under --runs-dir), an "
                                      "experiment file or a preset")
    p.add_argument("--measures-every", type=int, default=500, metavar="STEPS",
                   help="steps between the measures (default 500)")
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="only this variant (repeatable; default: every one), trained as in "
                        "the whole run")
    p.set_defaults(handler=cmd_probe)

    p = sub.add_parser("recalibrate", parents=[data_options],
                       help="recompute a finished run's BatchNorm statistics over N training "
                            "batches (PreciseBN), as a new checkpoint beside the trained one; "
                            "prints the validation accuracy before and after per seed")
    p.add_argument("run", type=Path, help="a run folder, or a run's name under --runs-dir")
    p.add_argument("--batches", type=int, default=200, metavar="N",
                   help="training batches to average over (default 200)")
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="only this variant (or sweep point; repeatable; default: every one "
                        "with BatchNorm)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.set_defaults(handler=cmd_recalibrate)

    # Which trained member of a run a command takes (export, predict).
    member_options = argparse.ArgumentParser(add_help=False, parents=[data_options])
    member_options.add_argument("--variant",
                                help="which variant of the run (default: the first with BN)")
    member_options.add_argument("--seed", type=int,
                                help="which seed of the run (default: its first)")
    member_options.add_argument("--runs-dir", type=Path, default=Path("runs"))

    p = sub.add_parser("export", parents=[member_options],
                       help="write one trained member of a run as ONNX (optionally with its "
                            "BatchNorm folded; checked by onnxruntime against bnlab on the "
                            "test images before it is written), Keras .keras or a PyTorch "
                            "state_dict")
    p.add_argument("run", type=Path, help="a run folder, or a run's name under --runs-dir")
    p.add_argument("--fold", action="store_true",
                   help="fold every BatchNorm into its neighbouring Dense layer first")
    p.add_argument("--recalibrated", action="store_true",
                   help="the recalibrated checkpoint's statistics (bnlab recalibrate)")
    p.add_argument("--format", choices=("onnx", "keras", "torch"), default="onnx",
                   help="onnx (checked by onnxruntime), keras (.keras, loads in Keras 3) or "
                        "torch (state_dict as safetensors + the nn.Sequential code)")
    p.add_argument("--out", type=Path,
                   help="the file (default RUN/VARIANT-seedS[-folded].onnx, .keras or "
                        ".safetensors)")
    p.add_argument("--force", action="store_true",
                   help="write over an existing --out file (never a run's own files)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("predict", parents=[member_options],
                       help="the top-3 classes of image files (any size, PNG/JPEG) by a run's "
                            "trained model, an exported .onnx or a .keras file; --test N draws "
                            "N test images with their predictions")
    p.add_argument("model", help="a run folder (or its name under --runs-dir), a .onnx file or "
                                 "a Keras 3 .keras file (read as data, nothing in it runs)")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    p.add_argument("--test", type=int, metavar="N",
                   help="draw the first N test images (1-400) with predictions")
    p.add_argument("--out", type=Path,
                   help="the --test grid: .png, .svg or .pdf (default predictions-N.png)")
    p.add_argument("--force", action="store_true",
                   help="write over an existing --out file (never a run's own files)")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("runs", help="list the runs under the runs directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("show", help="print one run: config, results, verdicts")
    p.add_argument("run", type=Path, help="a run folder, or a run's name under --runs-dir "
                                          "(as `bnlab runs` lists them)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("report", help="write a self-contained HTML report of one or more runs")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folders, or runs' names under --runs-dir (as `bnlab runs` lists "
                        "them)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--out", type=Path,
                   help="the HTML file (default RUN/report.html for one run, "
                        "./report.html for several)")
    p.add_argument("--force", action="store_true",
                   help="write over an existing --out file (never a run's own files)")
    p.set_defaults(handler=cmd_report)
    return parser
