"""`crackseg bench`."""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from crackseg.bench import media, throughput, timing
from crackseg.cli.common import checkpoint_arguments, load_model
from crackseg.errors import DatasetError
from crackseg.files.images import load_image
from crackseg.files.writing import write_text
from crackseg.inference.acceleration import PRECISIONS
from crackseg.models import UNetClassifier
from crackseg.pipelines.photos import expand_inputs
from crackseg.training.config import resolve_device


def add_parser(commands: Any) -> None:
    """Add `crackseg bench` to the subcommands."""
    bench = commands.add_parser(
        "bench", help="measure inference and training speed (JSON)",
        description="Measure, in one run with interleaved rounds: inference crops/s of the plain eager fp32 U-Net "
                    "(on the batch, and one crop at a time), of the fast path (BatchNorm folded, channels-last, "
                    "reduced precision where the hardware has it, cache-sized chunks on CPUs) and of the "
                    "gated model at 0/10/50/100% cracked crops; where the head is int8 (CPUs in fp32) the full "
                    "head gated at 0/100%; the onnxruntime engine always decoding and gated at 0/100%; the ideal "
                    "gated speedup from FLOP counts; stage-1 training crops/s (plain and fast, data loader "
                    "included) and the loader's own crops/s; the CPU's ISA flags. Prints JSON and writes it to "
                    "--out. Random weights unless --agreement-images is given.")
    bench.add_argument("--width", type=int, default=32, help="U-Net base width [32]")
    bench.add_argument("--crop", type=int, default=224, help="crop side in px [224]")
    bench.add_argument("--batch", type=int, default=10, help="crops per inference batch [10]")
    bench.add_argument("--rounds", type=int, default=10, help="timed rounds per variant (the median counts) [10]")
    bench.add_argument("--train-images", type=int, default=2, help="images (x5 crops) per training batch [2]")
    bench.add_argument("--train-steps", type=int, default=2, help="training steps per round [2]")
    bench.add_argument("--no-training", action="store_true", help="skip the training measurements")
    bench.add_argument("--no-onnx", action="store_true",
                       help="skip the onnxruntime engine, also for --photos (its export takes a few seconds)")
    bench.add_argument("--compile", default=None, metavar="BACKEND",
                       help="also time the fast path with its parts through torch.compile on this backend "
                            "(inductor: the first compile takes about a minute on a CPU)")
    bench.add_argument("--video", action="store_true",
                       help="also measure a video stream: PyAV's decoder alone, and the model on its frames gated "
                            "at 10%% cracked tiles and always decoding (frames/s)")
    bench.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="reduced precision of the fast path [auto: fp16 on CUDA; on CPUs with native bf16 the "
                            "faster of bf16 and fp32, timed on a chunk of tiles; else fp32]")
    bench.add_argument("--agreement-images", default=None,
                       help="folder of photos: also report, for the fast path, the fp32 int8 head and "
                            "onnxruntime, the Dice of their binarised masks with plain fp32's and the share of "
                            "tiles gated alike, with the trained checkpoints or the shipped model")
    bench.add_argument("--photos", default=None, metavar="DIR",
                       help="folder of real photos (e.g. survey footage): also report megapixels and photos a second "
                            "of predict's model work on them, gated, always decoding and the gate alone, the share "
                            "of tiles decoded and the decoder's share of the time, in torch and (unless --no-onnx) "
                            "onnxruntime, with the trained checkpoints or the shipped model")
    bench.add_argument("--photos-limit", type=int, default=8, help="photos of --photos used, in name order [8]")
    bench.add_argument("--overlap", type=int, default=None,
                       help="the tiles' overlap in px for --photos [predict's default, an eighth of the tile]")
    checkpoint_arguments(bench.add_argument_group("model for --agreement-images and --photos"))
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [auto]")
    bench.add_argument("--out", default="logs/bench.json", help="JSON output file [logs/bench.json]")
    bench.set_defaults(handler=run)


def photo_paths(folder: str) -> List[Path]:
    """The photos under a folder, in path order; a folder that cannot be read is an error."""
    paths, problems = expand_inputs([folder])
    if problems:
        raise DatasetError("; ".join(problems))
    return list(paths)


def run(args: argparse.Namespace) -> int:
    """`crackseg bench` with its parsed flags; returns the exit code."""
    device = torch.device(resolve_device(args.device))
    report: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": "crackseg " + " ".join(sys.argv[1:]),
        "machine": timing.machine(),
        "config": {"width": args.width, "crop": args.crop, "batch": args.batch, "rounds": args.rounds,
                   "device": str(device), "precision": args.precision}}
    report["flops"] = timing.flops(UNetClassifier(args.width, args.crop).eval(), args.crop)
    report["inference"] = throughput.inference(args.width, args.crop, args.batch, args.rounds, device, args.precision,
                                              onnx=not args.no_onnx, compile_backend=args.compile)
    report["inference"]["gated_0_share_of_ideal"] = (report["inference"]["gated_over_fast"]["0"]
                                                     / report["flops"]["ideal_gated_speedup_at_0"])
    if not args.no_training:
        report["training"] = throughput.training(args.width, args.crop, args.train_images, args.train_steps,
                                                args.rounds, device, args.precision)
    if args.video:
        report["video"] = media.video_stream(args.width, args.crop, args.rounds, device, args.precision)
    args.gate_threshold = None  # the model's own, for the measurements on photos
    if args.agreement_images:
        paths = photo_paths(args.agreement_images)
        images = lambda: ((path, load_image(path)) for path in paths)  # noqa: E731
        report["agreement"] = {"images": len(paths), **media.agreement(load_model(args), device, args.precision,
                                                                          images, onnx=not args.no_onnx)}
    if args.photos:
        chosen = photo_paths(args.photos)[:args.photos_limit]
        images = lambda: ((path, load_image(path)) for path in chosen)  # noqa: E731
        report["photos"] = {"folder": args.photos, **media.photos(load_model(args), device, args.precision, images,
                                                                     args.rounds, args.overlap,
                                                                     onnx=not args.no_onnx)}
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), text + "\n")
    return 0
