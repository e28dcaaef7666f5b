"""The latent-space explorer in headless Chromium: decode latency per frame, first load, accuracy.

Serves each decoder with `keras_vae.serving.server` (the explorer page at /, sent cross-origin isolated so
that WebAssembly threads are allowed) and drives the page with Playwright in Debian's Chromium:

* decode latency per frame: `explorer.bench` times onnxruntime-web's `session.run` inside the
  page (batch 1, a frame of the pad, and batch 16, the sample grid), with 1 and 2 threads,
  rounds interleaved so background load hits every configuration alike; beside it the same
  decoder in Python onnxruntime (1 thread) for scale;
* first load: a fresh browser context (empty cache) per load; bytes are the bodies received
  (the page, onnxruntime-web, the models; gzip where the server compresses), time is from
  navigation to the first images drawn;
* max |browser − Python|: 256 latents drawn from the prior, decoded by the page and by Python
  onnxruntime from the same file.

By default it exports a fresh 28×28 MLP VAE and a conv VAE (latent 16; training does not
change the cost); --mlp/--conv take exported decoders instead. It needs Chromium
(/usr/bin/chromium), Playwright and node_modules (npm ci).

examples:
  python benchmarks/browser.py
  python benchmarks/browser.py --mlp runs/mnist/decoder.onnx --encoder runs/mnist/encoder.onnx
  python benchmarks/browser.py --mlp runs/mnist/decoder.onnx --encoder runs/mnist/encoder.onnx \\
      --screenshot docs/explorer.png     # only the picture of the page
  python benchmarks/browser.py --mlp runs/conditional/conditional/decoder.onnx \\
      --encoder runs/conditional/conditional/encoder.onnx --label 7 \\
      --screenshot docs/conditional_explorer.png   # a class-conditional model, class 7 picked
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from common import REPO
from common import machine_line
from common import markdown_table
from common import median_latency
from common import run_worker

sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

THREADS = (1, 2)
ACCURACY_ROWS = 256

FIRST_LOAD = """(() => {
  const entries = [performance.getEntriesByType('navigation')[0],
                   ...performance.getEntriesByType('resource')];
  return {bytes: entries.map(e => [e.name, e.encodedBodySize, e.decodedBodySize]),
          timing: explorer.timing};
})()"""


def prepare_worker(args):
    """TensorFlow process: export fresh 28×28 VAEs (mlp, conv) to --workdir."""
    import keras_vae
    from keras_vae.export.onnx import export_decoder, export_encoder

    info = {}
    for architecture in ("mlp", "conv"):
        vae = keras_vae.VAE(input_shape=(28, 28, 1), latent_dim=16, architecture=architecture)
        vae.compile(optimizer="adam")
        export_decoder(vae, os.path.join(args.workdir, f"{architecture}_decoder.onnx"))
        export_encoder(vae, os.path.join(args.workdir, f"{architecture}_encoder.onnx"))
        info[architecture] = {"hidden_units": list(vae.hidden_units),
                              "conv_filters": list(vae.conv_filters)}
    print(json.dumps(info))


def open_page(browser, url):
    from helpers.headless_chromium import Recorder

    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    page.rec = Recorder(page)
    page.goto(url)
    page.wait_for_function("window.explorer !== undefined && window.explorer.ready !== null")
    page.evaluate("explorer.ready")
    page.evaluate("explorer.settled()")
    if page.rec.console_errors or page.rec.external_requests():
        raise RuntimeError(f"{url}: console errors {page.rec.console_errors}, "
                           f"external requests {page.rec.external_requests()}")
    return page


def group_bytes(entries):
    """Body bytes received (as sent, gzip where the server compressed) by part: the page,
    onnxruntime-web, the model files; and the total once unpacked."""
    parts = {"page": 0, "onnxruntime-web": 0, "model": 0, "unpacked": 0}
    for name, encoded, decoded in entries:
        part = ("onnxruntime-web" if "/explorer/ort/" in name
                else "model" if "/models/" in name else "page")
        parts[part] += encoded
        parts["unpacked"] += decoded
    return parts


def measure(browser, decoder, encoder, calls, rounds, loads):
    """All numbers for one decoder (and optional encoder)."""
    from helpers.headless_chromium import serve_app

    from keras_vae.core import contract
    from keras_vae.serving import explorer
    from keras_vae.serving.sampler import Sampler
    from keras_vae.serving.app import create_app

    app = create_app(decoder, encoder=encoder)
    if not any(getattr(route, "path", None) == "/explorer/config.json" for route in app.routes):
        explorer.add_explorer_routes(app)
    sampler = Sampler(decoder, provider="cpu", intra_op_threads=1)
    result = {"latent_dim": sampler.latent_dim, "image_shape": list(sampler.image_shape)}
    with serve_app(app) as url:
        open_page(browser, url + "/?threads=1").context.close()  # the server compresses, once
        cold = []
        for _ in range(loads):
            page = open_page(browser, url + "/?threads=1")
            cold.append(page.evaluate(FIRST_LOAD))
            page.context.close()
        result["first_load_bytes"] = group_bytes(cold[0]["bytes"])
        result["first_load_ms"] = statistics.median(c["timing"]["readyMs"] for c in cold)
        result["session_ms"] = statistics.median(c["timing"]["sessionMs"] for c in cold)

        pages = {threads: open_page(browser, f"{url}/?threads={threads}") for threads in THREADS}
        latency = {(threads, batch): [] for threads in THREADS for batch in (1, 16)}
        for _ in range(rounds):
            for threads, page in pages.items():
                assert page.evaluate("explorer.threads") == threads
                for batch in (1, 16):
                    stats = page.evaluate(f"explorer.bench({calls if batch == 1 else calls // 4}, "
                                          f"{batch})")
                    latency[threads, batch].append(stats["median"])
        result["browser_ms"] = {f"{t},{b}": statistics.median(v) for (t, b), v in latency.items()}

        z = contract.draw_latents(ACCURACY_ROWS, sampler.latent_dim, sampler.prior, seed=0)
        want = sampler.decode(z)
        result["max_abs_diff"] = {}
        for threads, page in pages.items():
            got = page.evaluate("z => explorer.decode(z)", z.tolist())
            got = np.asarray(got["data"], np.float32).reshape(want.shape)
            result["max_abs_diff"][threads] = float(np.abs(got - want).max())
        for page in pages.values():
            page.context.close()

    one = np.zeros((1, sampler.latent_dim), np.float32)
    result["python_ms"] = median_latency(lambda: sampler.decode(one)) * 1e3
    return result


def screenshot(browser, decoder, encoder, path, label=None):
    """The page with a model, a sample grid, the pad moved, and a hand-drawn 7 encoded
    (a class-conditional model's class picker set to `label`)."""
    from helpers.headless_chromium import serve_app

    from keras_vae.serving import explorer
    from keras_vae.serving.app import create_app

    app = create_app(decoder, encoder=encoder)
    if not any(getattr(route, "path", None) == "/explorer/config.json" for route in app.routes):
        explorer.add_explorer_routes(app)
    with serve_app(app) as url:
        query = "" if label is None else f"?class={label}"
        page = open_page(browser, url + f"/{query}#seed=3&t=0.9")
        page.locator("#draw").scroll_into_view_if_needed()
        box = page.locator("#draw").bounding_box()
        if box:  # a 7: a bar, then down to the left
            x, y, w, h = box["x"], box["y"], box["width"], box["height"]
            points = [(0.28, 0.22), (0.72, 0.2), (0.62, 0.45), (0.5, 0.8)]
            page.mouse.move(x + points[0][0] * w, y + points[0][1] * h)
            page.mouse.down()
            for (x0, y0), (x1, y1) in zip(points, points[1:]):
                for step in range(1, 9):
                    t = step / 8
                    page.mouse.move(x + (x0 + t * (x1 - x0)) * w, y + (y0 + t * (y1 - y0)) * h)
            page.mouse.up()
            page.wait_for_function("explorer.last !== null && explorer.last.score !== null")
        page.locator("#set-b").click()
        page.evaluate("explorer.settled()")
        page.wait_for_timeout(300)
        page.screenshot(path=path, full_page=True)
        page.context.close()
    print(f"wrote {path}")


def chromium_version():
    from helpers.headless_chromium import CHROMIUM

    try:
        out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "chromium"
    except OSError:
        return "chromium"


def ort_web_version():
    from keras_vae.serving import explorer

    path = explorer.ort_web_dir()
    package = path.parent / "package.json" if path else None
    if package and package.is_file():
        return json.loads(package.read_text())["version"]
    return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlp", help="an exported MLP decoder.onnx (default: a fresh one)")
    parser.add_argument("--conv", help="an exported conv decoder.onnx (default: a fresh one)")
    parser.add_argument("--encoder", help="the encoder.onnx that pairs with --mlp")
    parser.add_argument("--calls", type=int, default=200, help="timed decodes per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--loads", type=int, default=3, help="cold page loads per model")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="only save a picture of the page with --mlp (and --encoder)")
    parser.add_argument("--label", metavar="CLASS",
                        help="--screenshot of a class-conditional model: the class picked")
    parser.add_argument("--worker", choices=["prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "prepare":
        return prepare_worker(args)

    from helpers.headless_chromium import chromium, missing_browser_pieces

    missing = missing_browser_pieces()
    if missing:
        sys.exit("benchmarks/browser.py needs " + "; ".join(missing))
    if args.screenshot:
        if not args.mlp:
            sys.exit("--screenshot needs --mlp decoder.onnx (and --encoder encoder.onnx)")
        with chromium() as browser:
            screenshot(browser, args.mlp, args.encoder, args.screenshot, args.label)
        return None

    with tempfile.TemporaryDirectory() as workdir:
        labels = {"mlp": "MLP (fresh)", "conv": "conv (fresh)"}
        models = {"mlp": (args.mlp, args.encoder), "conv": (args.conv, None)}
        if not (args.mlp and args.conv):
            print("exporting fresh 28×28 decoders ...", file=sys.stderr, flush=True)
            info = run_worker(__file__, ["--worker", "prepare", "--workdir", workdir], "tensorflow")
            for arch in ("mlp", "conv"):
                if models[arch][0] is None:
                    models[arch] = (os.path.join(workdir, f"{arch}_decoder.onnx"),
                                    os.path.join(workdir, f"{arch}_encoder.onnx"))
                    detail = (info[arch]["hidden_units"] if arch == "mlp"
                              else info[arch]["conv_filters"])
                    labels[arch] = f"{arch} {detail}, fresh"
        for arch in ("mlp", "conv"):
            given = getattr(args, arch)
            if given:
                labels[arch] = (f"{arch} {os.path.basename(os.path.dirname(os.path.abspath(given)))}"
                                f"/{os.path.basename(given)}")
        results = {}
        with chromium() as browser:
            for arch, (decoder, encoder) in models.items():
                print(f"measuring {labels[arch]} ...", file=sys.stderr, flush=True)
                results[arch] = measure(browser, decoder, encoder, args.calls, args.rounds,
                                        args.loads)

    print(f"The explorer page in headless {chromium_version()}, onnxruntime-web "
          f"{ort_web_version()} (WebAssembly, SIMD), served by keras_vae.serving.server on 127.0.0.1 "
          f"(cross-origin isolated). {machine_line()}\n")
    rows = []
    for arch, r in results.items():
        for threads in THREADS:
            frame = r["browser_ms"][f"{threads},1"]
            rows.append([labels[arch], f"{r['latent_dim']} → {'×'.join(map(str, r['image_shape']))}",
                         threads, f"{frame:.3f}", f"{1e3 / frame:,.0f}",
                         f"{r['browser_ms'][f'{threads},16']:.3f}", f"{r['python_ms']:.3f}"])
    print("Decode latency per frame, median ms (in the page, `session.run`):\n")
    print(markdown_table(["decoder", "z → image", "wasm threads", "batch 1 ms", "frames/s",
                          "batch 16 ms", "Python onnxruntime batch 1 ms (1 thread)"], rows))
    print("\nFirst load (empty cache, 1 thread), median of cold loads:\n")
    rows = []
    for arch, r in results.items():
        parts = r["first_load_bytes"]
        sent = parts["page"] + parts["onnxruntime-web"] + parts["model"]
        rows.append([labels[arch], f"{parts['page']:,}", f"{parts['onnxruntime-web']:,}",
                     f"{parts['model']:,}", f"{sent:,}", f"{parts['unpacked']:,}",
                     f"{r['session_ms']:.0f}", f"{r['first_load_ms']:.0f}"])
    print(markdown_table(["decoder", "page bytes", "onnxruntime-web bytes",
                          "model bytes (decoder + encoder)",
                          "total bytes", "unpacked bytes", "models loaded ms", "first images ms"],
                         rows))
    print(f"\nBrowser against Python onnxruntime, the same file, {ACCURACY_ROWS} z from the prior:\n")
    rows = [[labels[arch], *(f"{r['max_abs_diff'][t]:.1e}" for t in THREADS)]
            for arch, r in results.items()]
    print(markdown_table(["decoder", *(f"max abs diff, {t} thread{'s' * (t > 1)}" for t in THREADS)],
                         rows))
    return None


if __name__ == "__main__":
    main()
