"""The Jetson-side commands (seed 001): retrain, convtrt, infer; and data, models."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_retrain(args: argparse.Namespace) -> int:
    """``ad-core retrain``."""
    from ad_core.bundle import read_meta
    from ad_core.retrain import retrain

    out = retrain(
        args.model,
        args.pretrained_pth,
        args.meta_json,
        args.category,
        args.data_root,
        args.out_dir,
        epochs=args.epochs,
        batch_size=args.batch,
        load_bank=args.load_bank,
        load_stats=args.load_stats,
        log=args.log == "on",
        seed=args.seed,
        device=args.device or "auto",
        precision=args.precision or "auto",
    )
    meta = read_meta(out)
    r = meta["retrain"]
    print(f"retrained {args.model} into {out} ({r.get('mode', 'fine-tune')}, {r['new_images']} new images)")
    if "memory_bank_size" in r:
        print(f"  memory bank: {r.get('old_memory_bank_size', 0)} -> {r['memory_bank_size']} rows")
    if "n_samples" in r:
        print(f"  statistics over {r['n_samples']} images")
    if "test_image_auroc" in r:
        print(
            f"  test: image AUROC {r['test_image_auroc']:.4f}, best F1 {r['test_image_f1']:.4f}; raw statistics refreshed"
        )
    else:
        print("  no test images of both classes: raw score statistics inherited from the original meta.json")
    print(
        f"next: ad-core convtrt --model {args.model} --weights_pth {out / 'model.pth'} --meta_json {out / 'meta.json'}"
    )
    return 0


def cmd_convtrt(args: argparse.Namespace) -> int:
    """``ad-core convtrt``."""
    from ad_core.convert import convtrt

    result = convtrt(
        args.model,
        args.weights_pth,
        args.meta_json,
        args.out_dir,
        memory_bank=args.memory_bank,
        stats=args.stats,
        opset=args.opset,
        fp16=args.fp16,
        workspace=args.workspace,
        use_dla=args.use_dla,
        max_batch=args.max_batch,
    )
    print(result.message)
    print(f"  graph {'simplified (outputs checked)' if result.simplified else 'as exported'}; meta: {result.meta}")
    engine = result.plan or result.onnx
    bank = f" -m {result.memory_bank}" if result.memory_bank else ""
    print(f"next: ad-core infer {args.model} -e {engine}{bank} -d <images>")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    """``ad-core infer``."""
    from ad_core.infer import infer

    report = infer(
        args.model,
        args.engine,
        args.data,
        image_size=args.image_size,
        threshold=args.threshold,
        norm_threshold=args.norm_threshold,
        memory_bank=args.memory_bank,
        meta_json=args.meta_json,
        backend=args.backend,
        out=args.out,
        precision=args.precision,
        pixel_threshold=args.pixel_threshold,
    )
    print(report.summary())
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``ad-core data``."""
    if args.data_command == "sample":
        from ad_core.data.sample import CATEGORIES, build_sample_dataset

        written = build_sample_dataset(args.data_root, overwrite=args.overwrite)
        print(f"sample data in {args.data_root}: {', '.join(CATEGORIES)} ({len(written)} written, rest already there)")
    elif args.data_command == "from-bag":
        return _from_bag(args)
    elif args.data_command == "elpv":
        from ad_core.data.elpv import import_elpv

        for name, counts in import_elpv(args.data_root, args.source, args.test_fraction, args.seed).items():
            print(f"{name} in {args.data_root}: {counts}")
    elif args.data_command == "magnetic-tile":
        from ad_core.data.magnetic_tile import import_magnetic_tile

        counts = import_magnetic_tile(args.source, args.data_root, args.test_fraction, args.seed, args.per_defect)
        for name, n in counts.items():
            print(f"{name} in {args.data_root}: {n}")
    elif args.data_command == "kolektor":
        from ad_core.data.kolektor import import_kolektor

        for name, n in import_kolektor(args.source, args.data_root, args.test_fraction, args.seed).items():
            print(f"{name} in {args.data_root}: {n}")
    elif args.data_command == "visa-download":
        from ad_core.data.visa import download_visa

        print(f"VisA extracted to {download_visa(args.download_dir)}")
    else:
        from ad_core.data.visa import ARCHIVE_NAME, split_visa

        src = Path(args.download_dir)
        src = (
            src / "VisA" if (src / "VisA").is_dir() else (src / ARCHIVE_NAME if (src / ARCHIVE_NAME).is_file() else src)
        )
        counts = split_visa(args.category, src, args.data_root)
        print(f"VisA_{args.category}: {counts}")
    return 0


def _from_bag(args: argparse.Namespace) -> int:
    from ad_core.data.bags import import_bag, list_topics
    from ad_core.errors import ConfigError

    if args.list:
        for t in list_topics(args.bag):
            print(f"{t.topic:<40} {t.msgtype:<36} {t.count:>8}")
        return 0
    if not args.topic or not args.category:
        raise ConfigError("from-bag needs --topic and --category (or --list to see the topics)")
    report = import_bag(
        args.bag, args.topic, args.category, args.data_root, split=args.split, every=args.every, hz=args.hz,
        start=args.start, end=args.end, dedup=args.dedup, roi=args.roi,
    )  # fmt: skip
    print(report.summary())
    return 1 if report.stopped else 0


def cmd_review(args: argparse.Namespace) -> int:
    """``ad-core review``: work through the review queue in the terminal (n / a / s, u to undo, q to stop)."""
    from ad_core.review import ReviewQueue

    queue = ReviewQueue(args.data_root, args.category, args.normal_to)
    if args.list:
        for item in queue.items():
            print(item.caption())
        print(f"{len(queue)} frame(s) waiting in {queue.folder}")
        return 0
    if args.label:
        print(f"-> {queue.label(args.label[0], args.label[1])}")
        return 0
    keys = {"n": "normal", "a": "anomaly", "s": "skip"}
    items = queue.items()
    i = 0
    while i < len(items):
        item = items[i]
        answer = input(f"[{i + 1}/{len(items)}] {item.caption()}  (n)ormal (a)nomaly (s)kip (u)ndo (q)uit > ")
        answer = answer.strip().lower()[:1]
        if answer == "q":
            break
        if answer == "u":
            back = queue.undo()
            if back is not None:
                i -= 1
                items[i] = next(x for x in queue.items() if x.path == back)
            continue
        if answer in keys:
            print(f"  -> {queue.label(item, keys[answer])}")
            i += 1
    counts = queue.counts()
    print(
        f"labelled: {counts['normal']} normal, {counts['anomaly']} anomaly, {counts['skip']} skipped; {counts['waiting']} waiting"
    )
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    """``ad-core models``."""
    from ad_core.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name} ({spec.dir_name}): {spec.description}")
        for p in spec.params:
            rng = (
                f" one of {list(p.choices)}" if p.choices else (f" in [{p.low}, {p.high}]" if p.low is not None else "")
            )
            print(f"  --{p.name:<16} default {p.default!s:<24}{rng}  {p.help}")
    return 0
