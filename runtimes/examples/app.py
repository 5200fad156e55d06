"""Upscale photos or camera frames with RDSRN: numpy, OpenCV and one runtime, no torch.

    python app.py photo.jpg photo_x4.png                  # bundled default x4 model
    python app.py photo.jpg out.png --model rdsrn_x4_int8.tflite --threads 4
    python app.py --camera 0 --model rdsrn_x4_int8.tflite # live preview, q to quit
"""
import argparse
import time

import cv2
from rdsrn.runtimes import Upscaler, resolve_model

p = argparse.ArgumentParser()
p.add_argument("input", nargs="?")
p.add_argument("output", nargs="?")
p.add_argument("--model", help="model file or bundled name (default: bundled x4)")
p.add_argument("--threads", type=int)
p.add_argument("--camera", type=int, help="camera index for a live preview")
args = p.parse_args()

up = Upscaler(resolve_model(args.model), threads=args.threads)  # configured by the file
print(f"x{up.scale} {up.format} {up.precision} on {up.backend}, {up.threads} threads")
if args.camera is None:
    img = cv2.imread(args.input, cv2.IMREAD_UNCHANGED)  # BGR(A), gray or 16-bit
    if img is None:
        raise SystemExit(f"cannot read {args.input}")
    t = time.perf_counter()
    out = up.upscale_bgr(img)  # same dtype and channels, scale x larger
    print(f"{img.shape} -> {out.shape} in {time.perf_counter() - t:.2f} s")
    cv2.imwrite(args.output, out)
else:
    cam = cv2.VideoCapture(args.camera)
    while cv2.waitKey(1) != ord("q"):
        ok, frame = cam.read()
        if not ok:
            break
        small = cv2.resize(frame, (160, 120), interpolation=cv2.INTER_AREA)
        cv2.imshow("rdsrn", up.upscale_bgr(small))  # needs opencv-python (not headless)
