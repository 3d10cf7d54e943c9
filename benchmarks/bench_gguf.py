"""The GGUF round trip: the exported model in llama.cpp against our decoding in process.

Run as: python benchmarks/bench_gguf.py [--model default] [--data data/recent/test600.jsonl]
            [--papers 32] [--out reports/gguf]

Exports the model as f16 and q8_0 GGUF files, then titles the same papers greedily (no repetition
penalty: what llama.cpp, Ollama and vLLM do by default) in process (fp32: the reference; bf16) and
through llama-cpp-python (same prompt token ids), and with our 4-beam search for speed. It counts the
titles identical to the fp32 reference and scores all against the real titles. Then llama.cpp's own
OpenAI-compatible server (python -m llama_cpp.server) behind our remote backend: `generate --endpoint`
on a batch file of 16 abstracts and `eval --endpoint-model`. One process, one decoder at a time, one
title at a time for the latency (2-core CPU, nothing else running).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import rouge_l  # noqa: E402
from common import table  # noqa: E402


def timed(fn, abstracts):
    """(titles, titles/s over all, median seconds per title): one title at a time, as a chat client asks."""
    titles, times = [], []
    for abstract in abstracts:
        began = time.perf_counter()
        titles.append(fn(abstract))
        times.append(time.perf_counter() - began)
    return titles, len(abstracts) / sum(times), statistics.median(times)


def batched(fn, abstracts, batch_size=8):
    began, titles = time.perf_counter(), []
    for i in range(0, len(abstracts), batch_size):
        titles += fn(abstracts[i:i + batch_size])
    return titles, len(abstracts) / (time.perf_counter() - began)


def llama_cpp_titles(path: Path, generator, abstracts, max_tokens: int):
    """Greedy titles through llama.cpp on the same prompt token ids as ours; and by chat (the abstract as
    it is, rendered by the GGUF's chat template)."""
    import llama_cpp

    from chatgentitle.data.prompt import clean_title

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=os.cpu_count(), verbose=False)

    def raw(abstract):
        ids = generator.encode([abstract])[0][0].tolist()
        out = llm.create_completion(ids, max_tokens=max_tokens, temperature=0, repeat_penalty=1.0)
        return clean_title(out["choices"][0]["text"])

    def chat(abstract):
        out = llm.create_chat_completion([{"role": "user", "content": abstract}], max_tokens=max_tokens,
                                         temperature=0, repeat_penalty=1.0)
        return clean_title(out["choices"][0]["message"]["content"])

    raw(abstracts[0])  # warm-up
    return timed(raw, abstracts), [chat(a) for a in abstracts]


def through_server(gguf: Path, data: Path, out: Path, papers: int) -> dict:
    """llama_cpp.server behind `generate --endpoint` (16 abstracts) and `eval --endpoint-model`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, name = f"http://127.0.0.1:{port}/v1", gguf.stem
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", name,
                               "--port", str(port), "--n_ctx", "1024"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(300):
            try:
                httpx.get(f"{url}/models").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        batch_in, batch_out = out / "batch16.jsonl", out / "batch16-titles.jsonl"
        rows = [json.loads(line) for line in data.read_text().splitlines()[:16]]
        batch_in.write_text("".join(json.dumps({"id": r["id"], "abstract": r["abstract"]}) + "\n" for r in rows))
        batch_out.unlink(missing_ok=True)
        cli = [sys.executable, "-m", "chatgentitle"]
        subprocess.run([*cli, "generate", "--endpoint", url, "--model", name, "--input", str(batch_in),
                        "--output", str(batch_out), "--repetition-penalty", "1.0"], check=True)
        ids = [json.loads(line)["id"] for line in batch_out.read_text().splitlines()]
        evaluated = subprocess.run([*cli, "eval", "--data", str(data), "--limit", str(papers), "--out",
                                    str(out / "eval"), "--endpoint-model", f"llama-cpp-server={url},{name}",
                                    "--repetition-penalty", "1.0"], check=True, capture_output=True, text=True)
        return {"batch_ids": len(ids), "batch_distinct_ids": len(set(ids)),
                "batch_all_input_ids": sorted(ids) == sorted(r["id"] for r in rows),
                "eval": evaluated.stdout.strip().splitlines()[0]}
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="run dir ('default': the packaged adapter)")
    parser.add_argument("--data", default="data/recent/test600.jsonl")
    parser.add_argument("--papers", type=int, default=32)
    parser.add_argument("--out", default="reports/gguf")
    args = parser.parse_args()

    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.export.gguf_file import export_gguf
    from chatgentitle.titling.generator import TitleGenerator, default_adapter_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = default_adapter_dir() if args.model == "default" else Path(args.model)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[: args.papers]]
    abstracts, references = [r["abstract"] for r in rows], [r["title"] for r in rows]
    files = {}
    for outtype in ("f16", "q8_0"):
        began = time.perf_counter()
        files[outtype] = export_gguf(run_dir, Path("runs/gguf") / f"chatgentitle-{outtype}.gguf", outtype)
        print(f"{outtype}: {files[outtype].stat().st_size / 1e6:.0f} MB in {time.perf_counter() - began:.0f} s",
              flush=True)

    greedy = GenerationOptions(num_beams=1, consensus=0, repetition_penalty=1.0)
    beams = GenerationOptions(consensus=0)  # the fast mode: 4 beams
    results, titles = [], {}
    for dtype in ("fp32", "bf16"):
        generator = TitleGenerator.load(run_dir, dtype=dtype)
        one = lambda a, g=generator, o=greedy: g([a], options=o)[0]  # noqa: E731
        one(abstracts[0])
        found, rate, p50 = timed(one, abstracts)
        _, batch_rate = batched(lambda chunk, g=generator: g(chunk, options=greedy), abstracts)
        titles[f"ours greedy {dtype}"] = found
        results.append([f"ours, greedy, {dtype}", rate, batch_rate, p50])
        if dtype == "bf16":
            found, rate, p50 = timed(lambda a, g=generator: g([a], options=beams)[0], abstracts)
            _, batch_rate = batched(lambda chunk, g=generator: g(chunk, options=beams), abstracts)
            titles["ours 4 beams bf16"] = found
            results.append(["ours, 4 beams, bf16", rate, batch_rate, p50])
            reference_generator = generator
    for outtype, path in files.items():
        (found, rate, p50), chat = llama_cpp_titles(path, reference_generator, abstracts, greedy.max_new_tokens)
        titles[f"llama.cpp {outtype}"], titles[f"llama.cpp {outtype} chat"] = found, chat
        results.append([f"llama.cpp, greedy, {outtype}", rate, "–", p50])

    reference = titles["ours greedy fp32"]
    score_rows = [[name, sum(a == b for a, b in zip(found, reference, strict=True)), rouge_l(found, references)]
                  for name, found in titles.items()]
    server = through_server(files["f16"], Path(args.data), out, args.papers)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f in
                    ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")})
    report = "\n\n".join([
        f"{len(abstracts)} papers of {args.data}, {os.cpu_count()} cores ({cpu}; {' '.join(flags)})",
        "GGUF files: " + ", ".join(f"{k} {v.stat().st_size / 1e6:.0f} MB" for k, v in files.items()),
        table(["decoder", "titles/s, one at a time", "titles/s, batches of 8", "p50 s per title"], results),
        table([f"titles ({len(abstracts)})", "identical to ours greedy fp32", "ROUGE-L"], score_rows),
        "llama_cpp.server behind our remote backend: " + json.dumps(server),
    ])
    (out / "report.md").write_text(report + "\n")
    with open(out / "titles.jsonl", "w") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps({"id": row["id"], "title": row["title"],
                                     **{name: found[i] for name, found in titles.items()}}) + "\n")
    print(report)


if __name__ == "__main__":
    main()
