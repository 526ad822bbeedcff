"""The ``capq`` command: build the book (batch rerun) and print cached results."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

import pandas as pd
import yaml

from capq_lib import __version__
from capq_lib.core.devices import DEVICE_CHOICES
from capq_lib.core.paths import absolute_environment
from capq_lib.core.validate import ConfigError
from capq_lib.experiments import lm_capacity, records
from capq_lib.experiments.advise import EXPERIMENT as ADVICE_KIND
from capq_lib.experiments.advise import advise, measured
from capq_lib.experiments.at_capacity import KIND as AT_CAPACITY
from capq_lib.experiments.capacity import TRANSFORMER_KIND
from capq_lib.experiments.search import STUDIES, run_worker
from capq_lib.nets import realdata
from capq_lib.report import profiles
from capq_lib.report.runner import build, toc_notebooks

#: experiment names ``capq results`` knows, and what each record is
EXPERIMENTS = {
    "fcdnn-capacity": "capacity of one FCDNN architecture (one record per model and profile): "
                      "the replicates' mean and sd (capacity_bits_mean, capacity_bits_sd), the "
                      "search maximum beside it, whether its peak is bracketed, n_grid_max "
                      "and p_at_n_grid_max",
    "cnn-capacity": "capacity of one Table-1 CNN, as for FCDNNs, with the paper's conv bits "
                    "per parameter",
    "rnn-capacity": "capacity of one LSTM classifier, as for FCDNNs",
    "fcdnn-capacity-cnn-recipe": "capacity of one FCDNN searched with the CNN chapter's recipe "
                                 "(the comparison at equal effort)",
    "training-length": "one CNN trained at the N bracketing its peak for a multiple of its "
                       "epochs: model, factor, epochs, n_samples, seed, accuracy, mutual_info",
    "mi-trained": "one trained FCDNN: Eq. (1) against the plug-in estimate of I(Y; Y_hat) "
                  "from its own answers (gap per sample, error asymmetry)",
    "mi-check": "Eq. (1) against the plug-in estimate, one record per N and p",
    "quantization": "one trained net at one bit width: family, model, n_samples, "
                    "capacity_fraction, bits (null for float), step_rule, retrained, accuracy, "
                    "mutual_info",
    "real-tasks": "one real-task net at one width and data split: task, model, params, bits "
                  "(null for float), retrained, split, accuracy, loss (perplexity for LMs), "
                  "data (what it trained and tested on)",
    "loss-surfaces": "one point of a loss surface: task, model, width, split, alpha, loss and "
                     "accuracy (means and spreads over the directions)",
    "transformer-capacity": "the transformer chapter, both measures: capacity of each "
                            "classifier (measure 'classifier', Eq. (1), as the other "
                            "families) and of each LM per precision (measure 'lm': "
                            "memorized_bits, ceiling_bits, entropy_bits, vocab, seq_len, "
                            "precision), then their quantization rows (record "
                            "'quantization': bits, way, route, per net)",
    "transformer-lm": "one trained transformer LM: model, precision, n_sequences, seed, "
                      "memorized_bits (and after half the steps), ceiling_bits, entropy_bits",
}


def result_rows(name: str, profile: str | None = None) -> list[dict]:
    """The cached records of experiment ``name``, flattened, optionally of one profile (a
    name takes every configuration of that name, ``NAME@DIGEST`` exactly one)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"NAME must be one of {', '.join(EXPERIMENTS)}; got {name!r}")
    # a record may hold many rows (a quantization unit: every seed and bit width)
    rows = transformer_rows(profile) if name == "transformer-capacity" else \
        records.rows(name, profile, provenance=True)
    labels = records.labels(name)
    if profile is not None:
        mine = sorted({str(r["profile"]) for r in rows})
        if not rows:
            known = profile.split("@")[0] in profiles.available()
            raise ConfigError(f"--profile {profile!r} matches no records of {name}"
                              f"{'' if known else ' and no profile'}; profiles with records "
                              f"of {name}: {', '.join(sorted(labels)) or 'none yet'}"
                              + (f" (build its chapter first: capq build --profile "
                                 f"{profile.split('@')[0]})" if known else ""))
        if len(mine) > 1:
            print(f"capq: note: records of {len(mine)} configurations of profile {profile!r} "
                  f"({', '.join(mine)}); pass one of them as --profile to see one",
                  file=sys.stderr)
    return rows


def transformer_rows(profile: str | None) -> list[dict]:
    """The transformer chapter's export: classifier and LM capacities (one row per model,
    and per precision for LMs), then every quantization row of both measures."""
    out = [{**r, "measure": "classifier", "record": "capacity"}
           for r in records.rows(TRANSFORMER_KIND, profile, provenance=True)]
    lm_rows = records.rows(lm_capacity.EXPERIMENT, profile, provenance=True)
    if lm_rows:
        frame = pd.DataFrame(lm_rows)
        for label, g in frame.groupby("profile", sort=False):
            for r in lm_capacity.lm_summary(g).to_dict("records"):
                out.append({**r, "profile": label, "measure": "lm", "record": "capacity",
                            "provenance": g.provenance.iloc[0]})
    out += [{**r, "measure": "lm", "record": "quantization"}
            for r in records.rows(lm_capacity.QUANT_EXPERIMENT, profile, provenance=True)]
    out += [{**r, "measure": "classifier", "record": "quantization"}
            for r in records.rows(AT_CAPACITY, profile, provenance=True)]
    return out


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1, default=str)
    flat = [{**{k: v for k, v in r.items() if k != "provenance"},
             **{f"provenance.{k}": v for k, v in r.get("provenance", {}).items()}} for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def sweep(args: argparse.Namespace) -> int:
    """One worker: claims trials K at a time until every architecture's budget is met."""
    if args.experiment not in STUDIES:
        raise ConfigError(f"EXPERIMENT must be one of {', '.join(STUDIES)}; "
                          f"got {args.experiment!r}")
    params = profiles.load(args.profile).chapters.get(args.experiment, {})
    params = {k: v for k, v in params.items() if not k.startswith("fig")}
    if args.trials is not None:
        params["stage3_trials"] = args.trials
    if args.population is not None:
        params["population"] = args.population
    study = STUDIES[args.experiment].from_parameters(
        **params, profile=profiles.load(args.profile).identity)
    report = run_worker(study, args.device, args.storage)
    print(f"capq sweep: {report.trials_run} trials run by this worker in "
          f"{report.wall_time_s:.1f} s; every budget of {args.experiment} "
          f"(profile {study.profile}) is met")
    return 0


def params_command(args: argparse.Namespace) -> int:
    """A chapter's parameters under a profile, as flat YAML for ``papermill -f``."""
    prof = profiles.load(args.profile)
    chapters = sorted(nb.stem for nb in toc_notebooks())
    if args.chapter not in chapters:
        raise ConfigError(f"CHAPTER must be one of {', '.join(chapters)}; got {args.chapter!r}")
    params = {**prof.chapters.get(args.chapter, {}), "profile": prof.identity}
    print(f"# {args.chapter} under profile {prof.name}; papermill -f this file "
          f"(records are labelled {prof.identity}: label changed values apart with -p profile)")
    print(yaml.safe_dump(params, sort_keys=False, default_flow_style=None), end="")
    return 0


def data_command(args: argparse.Namespace) -> int:
    """Download (or check) datasets ahead of a long run."""
    paths = realdata.fetch_dataset(args.dataset, mirror=args.mirror, retries=args.retries)
    for p in paths:
        print(f"  ok  {p}")
    print(f"capq data: {len(paths)} file(s) of {args.dataset} present and verified (MD5)")
    return 0


def advise_command(args: argparse.Namespace) -> int:
    """Recommend bits per weight from the quantization chapter's measurements."""
    if args.profile is not None:
        labels = records.labels(ADVICE_KIND)
        if not any(records.profile_matches(x, args.profile) for x in labels):
            raise ConfigError(f"--profile {args.profile!r} has no quantization records; "
                              f"profiles with some: {', '.join(sorted(labels)) or 'none yet'}")
    advice = advise(args.family, args.params, args.samples, measured(args.profile))
    print(advice.text())
    print("evidence:")
    cols = ["model", "params", "n_samples", "data_per_param", "float_accuracy",
            "fewest_lossless_bits"]
    print(advice.evidence[cols].to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capq", description=__doc__)
    parser.add_argument("--version", action="version", version=f"capq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="execute every chapter with papermill and build the book")
    b.add_argument("--profile", default="quick",
                   help=f"one of {', '.join(profiles.available())} or a path to a .yaml file")
    b.add_argument("--device", default="auto",
                   help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (auto takes a GPU if present)")
    b.add_argument("--only", action="append", metavar="CHAPTER",
                   help="execute only this chapter (repeatable); others keep their last output")
    b.add_argument("--output", default=None, help="where _build/ goes (default: the project)")
    b.add_argument("--execute-only", action="store_true", help="run notebooks, skip the HTML")
    b.add_argument("--jobs", type=int, default=1,
                   help="chapters run side by side, each with a share of the CPU threads; a "
                        "chapter waits for the chapters whose results it reads (default 1)")

    w = sub.add_parser("sweep", help="start a worker on an experiment's capacity search")
    w.add_argument("experiment", metavar="EXPERIMENT",
                   help="fcdnn-capacity, cnn-capacity or rnn-capacity")
    w.add_argument("--profile", default="quick", help="whose parameters to search with")
    w.add_argument("--storage", default=None,
                   help="SQLAlchemy URL or journal:///path shared by all workers "
                        "(default: $CAPQ_STORAGE, else a journal file in data/optuna)")
    w.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    w.add_argument("--trials", type=int, default=None,
                   help="stage-3 trial budget per architecture (default: the profile's)")
    w.add_argument("--population", type=int, default=None,
                   help="K, trials trained together as one population (default: profile's)")

    r = sub.add_parser("results", help="print the cached records of an experiment")
    r.add_argument("name", metavar="NAME", help=f"one of {', '.join(EXPERIMENTS)}")
    r.add_argument("--profile", default=None, help="only records made under this profile")
    r.add_argument("--format", choices=("json", "csv"), default="json")

    d = sub.add_parser("data", help="fetch the real datasets ahead of a run")
    dsub = d.add_subparsers(dest="data_command", required=True)
    df = dsub.add_parser("fetch", help="download what is missing under $CAPQ_DATA_DIR and "
                                       "check every file's MD5")
    df.add_argument("dataset", nargs="?", default="all", metavar="DATASET",
                    help=f"one of {', '.join(realdata.DATASETS)} or all (default)")
    df.add_argument("--mirror", default=None,
                    help="fetch from this URL prefix + the file's path (e.g. file:///srv/data)")
    df.add_argument("--retries", type=int, default=3,
                    help="further tries after a network error (default 3)")

    pp = sub.add_parser("params", help="a chapter's parameters under a profile, as YAML for "
                                       "papermill -f")
    pp.add_argument("chapter", metavar="CHAPTER", help="a chapter of the book (notebook stem)")
    pp.add_argument("--profile", default="quick",
                    help=f"one of {', '.join(profiles.available())} or a path to a .yaml file")

    a = sub.add_parser("advise", help="recommend bits per weight from measured quantization")
    a.add_argument("--family", required=True, help="fc, cnn or rnn")
    a.add_argument("--params", required=True, type=int, help="the net's parameter count P")
    a.add_argument("--samples", required=True, type=int, help="samples N it must hold")
    a.add_argument("--profile", default=None,
                   help="use measurements of this profile only (default: all)")

    args = parser.parse_args(argv)
    absolute_environment()
    try:
        if args.command == "build":
            report = build(args.profile, args.device, args.only, args.output, args.execute_only,
                           args.jobs)
            for run in report.notebooks:
                print(f"  {run.chapter:24s} {run.status:8s} {run.seconds:8.1f} s  {run.error}")
            if report.failed:
                print(f"capq build: notebook(s) failed: {', '.join(report.failed)} "
                      f"(their pages show the error)", file=sys.stderr)
                return 1
            if not args.execute_only:
                print(f"The book is at {report.html_index}")
            return 0
        if args.command == "sweep":
            return sweep(args)
        if args.command == "advise":
            return advise_command(args)
        if args.command == "params":
            return params_command(args)
        if args.command == "data":
            return data_command(args)
        print(format_rows(result_rows(args.name, args.profile), args.format), end="\n")
        return 0
    except ConfigError as err:
        print(f"capq: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
