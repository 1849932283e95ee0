"""`imgclass <command>`: the library's entry points for people (DVC stages call the same functions)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_validate(args: argparse.Namespace) -> int:
    from imgclass import files
    from imgclass.config.params import ValidateParams, load_params
    from imgclass.data import validate

    cfg = load_params(args.params).validate if args.params else ValidateParams()
    try:
        summary = validate.validate_tree(Path(args.src), Path(args.dest), cfg)
    except (FileNotFoundError, ValueError) as exc:  # missing SRC, nothing accepted, DEST inside SRC
        print(f"imgclass validate: {exc}", file=sys.stderr)
        return 1
    if args.summary:
        files.write_json(args.summary, summary)
    print(f"{args.dest}/report.csv: {summary}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """The review stage's checks on any folder of class sub-folders: OUT/issues.csv, OUT/auto_drop.csv, OUT/index.html."""
    from imgclass.config.params import ReviewParams, ValidateParams
    from imgclass.data.validate import group_names
    from imgclass.model.models import WeightsUnavailable
    from imgclass.review import review_report, scoring

    params = load_params_or_report(args.params) if args.params else None
    if args.params and params is None:
        return 1
    cfg = params.review if params else ReviewParams()
    near_duplicate_bits = (params.validate if params else ValidateParams()).near_duplicate_distance
    src, out = Path(args.src), Path(args.out)
    try:
        folder = review_report.labelled_folder(src)
        # validate's near-duplicate groups, so that the cross-validation holds a twin out with its image
        groups = group_names(folder.sha256s, folder.phashes, near_duplicate_bits)
        result = scoring.find_issues(folder.images, folder.labels, folder.sha256s, folder.classes, cfg,
                                    Path(args.cache_dir) if args.cache_dir else None, args.device, groups=groups)
    except (FileNotFoundError, ValueError, WeightsUnavailable) as exc:
        print(f"imgclass review: {exc}", file=sys.stderr)
        return 1
    paths = [image.relative_to(src).as_posix() for image in folder.images]
    review_report.write_tables(out, result, paths, folder.labels, folder.sha256s)
    review_report.write_page(out / "index.html", result, folder.images, paths, folder.classes)
    print(f"{out}/issues.csv: flagged {result.summary['issues']}, then {len(result.below_threshold)} below "
          f"threshold; auto_drop ({cfg.auto_drop}): {len(result.auto_drop)}; page: {out}/index.html")
    return 0


def load_params_or_report(path: str):
    """The validated params, or None after printing the one-line error."""
    from imgclass.config.params import ParamsError, load_params

    try:
        return load_params(path)
    except ParamsError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_check_params(args: argparse.Namespace) -> int:
    """Valid for imgclass *and* complete for DVC, which reads every key dvc.yaml declares from the file."""
    import yaml

    from imgclass.config import dvc_params
    from imgclass.config.params import ParamsError

    params = load_params_or_report(args.params)
    if params is None:
        return 1
    if args.fill:
        try:
            written = dvc_params.fill_missing(Path(args.params), Path(args.dvc_yaml))
        except ParamsError as exc:  # a key inside a section the file has: it names what to add
            print(exc, file=sys.stderr)
            return 1
        if written:
            print(f"{args.params}: wrote defaults for {', '.join(written)}")
    missing = dvc_params.missing_keys(yaml.safe_load(Path(args.params).read_text()) or {}, Path(args.dvc_yaml))
    if missing:
        print(f"{args.params}: dvc repro needs {', '.join(missing)}, which the file leaves to defaults; "
              f"run `imgclass check-params --fill` to write them", file=sys.stderr)
        return 1
    print(f"{args.params}: ok ({len(params.classes)} classes, models: {', '.join(params.models)})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from imgclass.devices import resolve_device
    from imgclass.serving import predict

    try:
        choice = predict.resolve_checkpoints(args.model, args.models_dir, args.params, args.ensemble_spec)
        found = predict.expand_paths(args.paths)
        rows = predict.predict_files(found.files, choice, args.top_k, args.batch_size, resolve_device(args.device),
                                     args.tta, args.preds_dir)
        if args.out:
            predict.write_rows(args.out, rows)
    except (FileNotFoundError, RuntimeError, predict.PredictError) as exc:
        print(f"imgclass predict: {exc}", file=sys.stderr)
        return 1
    if args.out:
        print(f"{args.out}: {predict.summary(rows)}")
    else:
        predict.print_table(rows, f"{args.model}: {predict.summary(rows)}")
    if found.skipped:
        print(predict.skipped_line(found.skipped))
    return 0 if any(r["status"] == "ok" for r in rows) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from imgclass.serving import export

    try:
        out = export.export_model(Path(args.models_dir) / args.name / "model.pt", args.format, args.out,
                                  tta=args.tta, preds_dir=args.preds_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"imgclass export: {exc}", file=sys.stderr)
        return 1
    print(f"{out} ({args.format}); classes and preprocessing: {export.sidecar_path(out)}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from imgclass.serving import registry
    from imgclass.serving.predict import PredictError

    try:
        version = registry.register(args.model, args.name, args.models_dir, args.preds_dir, args.params,
                                    args.ensemble_spec)
    except (FileNotFoundError, PredictError) as exc:
        print(f"imgclass register: {exc}", file=sys.stderr)
        return 1
    uri = registry.registered_uri(version)
    print(f"registered {uri} (members: {version.tags['members']}; vote: {version.tags['vote']})")
    print(f"serve it: mlflow models serve -m {uri} --env-manager local -h 127.0.0.1 -p 5001")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from imgclass import files
    from imgclass.training.lr_find import lr_range_test, plot

    params = load_params_or_report(args.params)
    if params is None:
        return 1
    if args.model not in params.models:
        print(f"imgclass lr-find: no model {args.model!r} in {args.params} ({', '.join(params.models)})", file=sys.stderr)
        return 1
    result = lr_range_test(args.model, params, Path(args.split_dir), steps=args.steps)
    out = Path(args.out or f"plots/lr_find/{args.model}.png")
    plot(result, out, title=f"{args.model}: learning-rate range test")
    files.write_json(out.with_suffix(".json"), result)
    print(f"{args.model}: suggested lr {result['suggestion']:.2e} (plot: {out})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from imgclass.tracking import compare

    return compare.run(args.width)


def add_tta_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", default="evaluated", choices=["evaluated", "none", "hflip"],
                   help="test-time augmentation: `evaluated` (default) = what the evaluate stage chose for the "
                        "checkpoint (params evaluate.tta); hflip = mean of the image's and its mirror's probabilities")
    p.add_argument("--preds-dir", default="data/preds", help="the evaluate stage's saved predictions and TTA choice")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclass", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="decode and clean a tree of class folders; report every file")
    p.add_argument("src", help="folder with one sub-folder per class")
    p.add_argument("dest", help="where clean PNGs, _rejected/ and report.csv go")
    p.add_argument("--params", help="read the validate section of this params.yaml (default: built-in defaults)")
    p.add_argument("--summary", help="also write the summary as JSON here")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("review", help="find wrong labels, off-topic, near-duplicate and low-quality images in a folder of class folders")
    p.add_argument("src", help="folder with one sub-folder per class")
    p.add_argument("out", help="where issues.csv, auto_drop.csv and index.html (the review page) go")
    p.add_argument("--params", help="read the review section of this params.yaml (default: built-in defaults)")
    p.add_argument("--cache-dir", help="keep embeddings here by image sha256, so a rerun embeds only new images")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("lr-find", help="learning-rate range test for a model of params.yaml; plot + suggestion")
    p.add_argument("model")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--split-dir", default="data/split", help="output of the split stage")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", help="PNG path (default plots/lr_find/MODEL.png)")
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("check-params", help="validate params.yaml: the first bad key, and keys dvc repro needs")
    p.add_argument("params", nargs="?", default="params.yaml")
    p.add_argument("--fill", action="store_true",
                   help="append the sections dvc.yaml declares but the file leaves out, with their defaults")
    p.add_argument("--dvc-yaml", default="dvc.yaml", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_check_params)

    p = sub.add_parser("predict", help="classify image files and folders with a trained model or the ensemble")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files and folders (searched recursively; files that are not images are skipped)")
    p.add_argument("--model", default="ensemble",
                   help="a model under --models-dir, or `ensemble` (default): params.yaml's ensemble members with "
                        "the vote the ensemble stage chose on validation")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--params", default="params.yaml", help="where the ensemble's members are named")
    p.add_argument("--ensemble-spec", default="reports/ensemble.json",
                   help="the ensemble stage's chosen vote, weights and member checkpoints")
    p.add_argument("--top-k", type=int, default=3, help="classes to report per image (default 3)")
    p.add_argument("--out", help="write all rows to this .csv or .json instead of printing a table")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    add_tta_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a trained model as TorchScript or ONNX, with its classes and preprocessing")
    p.add_argument("name", help="a model under --models-dir")
    p.add_argument("--format", required=True, choices=["torchscript", "onnx"])
    p.add_argument("--out", help="default: exports/NAME.onnx or exports/NAME.torchscript.pt")
    p.add_argument("--models-dir", default="models")
    add_tta_arguments(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("register", help="register a model (or the ensemble) in MLflow as a servable pyfunc")
    p.add_argument("--model", default="best",
                   help="`best` (params.yaml's model with the highest validation accuracy, default), `ensemble` "
                        "(the evaluated ensemble and its chosen vote), or a model name")
    p.add_argument("--name", default="imgclass", help="registered model name (default imgclass)")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--preds-dir", default="data/preds", help="the evaluate stage's saved validation predictions")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--ensemble-spec", default="reports/ensemble.json",
                   help="the ensemble stage's chosen vote, weights and member checkpoints")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("compare", help="experiments side by side: changed params, each model's and vote's "
                                       "test accuracy, training time (from dvc exp show)")
    p.add_argument("--width", type=int, default=120, help="table width in characters (default 120)")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
