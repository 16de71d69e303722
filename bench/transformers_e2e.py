"""PyTorch/transformers bf16 baseline of `bwq bench --e2e` (run on the GPU machine, same shapes, same timing rules).

  python3 bench/transformers_e2e.py bench/configs/llama-2-7b.json [--prefill 2048] [--prompt 512] [--steps 128]
                                    [--batches 1,16] [--json OUT]

A model with random weights from the config (bf16, SDPA attention) on cuda:0:
  prefill: one forward of `prefill` tokens at batch 1 returning the last position's logits, best of 2 after a warm-up;
  decode:  a `prompt`-token prefill, then `steps` one-token forwards with the KV cache (DynamicCache; and StaticCache
           where it works), each returning the last logits; tokens/s = batch * steps / seconds.
Fixed input ids (no sampling), torch.cuda.synchronize() around each timing.
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def ids(n, vocab, device):
    return (torch.arange(n, device=device) * 7919 + 13) % vocab


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--prefill", type=int, default=2048)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--batches", default="1,16")
    p.add_argument("--json")
    a = p.parse_args()
    cfg = AutoConfig.from_pretrained(a.config)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    vocab = cfg.vocab_size
    dev = "cuda"
    out = {"config": a.config, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
           "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30}
    with torch.inference_mode():
        x = ids(a.prefill, vocab, dev).view(1, -1)
        best = float("inf")
        for r in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            model(x, use_cache=False, logits_to_keep=1)
            torch.cuda.synchronize()
            if r > 0:
                best = min(best, time.perf_counter() - t)
        out["prefill"] = {"tokens": a.prefill, "seconds": best, "tokens_per_second": a.prefill / best}
        print(f"transformers prefill {a.prefill}: {best * 1000:.1f} ms", flush=True)
        out["decode"] = []
        for batch in [int(b) for b in a.batches.split(",")]:
            for kind in ["dynamic", "static"]:
                try:
                    prompt = ids(batch * a.prompt, vocab, dev).view(batch, a.prompt)
                    step = ids(batch, vocab, dev).view(batch, 1)

                    def run(steps):
                        if kind == "static":
                            from transformers import StaticCache
                            cache = StaticCache(config=cfg, max_batch_size=batch, max_cache_len=a.prompt + a.steps,
                                                device=dev, dtype=torch.bfloat16)
                        else:
                            from transformers import DynamicCache
                            cache = DynamicCache()
                        o = model(prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                        cache = o.past_key_values
                        torch.cuda.synchronize()
                        t = time.perf_counter()
                        for i in range(steps):
                            pos = torch.full((batch, 1), a.prompt + i, device=dev, dtype=torch.long)
                            o = model(step, past_key_values=cache, use_cache=True, position_ids=pos,
                                      cache_position=pos[0], logits_to_keep=1)
                            o.logits.float().cpu()
                        torch.cuda.synchronize()
                        return time.perf_counter() - t

                    run(min(8, a.steps))
                    sec = run(a.steps)
                    row = {"batch": batch, "cache": kind, "prompt": a.prompt, "steps": a.steps, "seconds": sec,
                           "tokens_per_second": batch * a.steps / sec}
                    out["decode"].append(row)
                    print(f"transformers decode batch {batch} ({kind} cache): {row['tokens_per_second']:.1f} tokens/s",
                          flush=True)
                except Exception as e:  # a cache kind this transformers version does not take
                    print(f"transformers decode batch {batch} ({kind} cache): failed: {type(e).__name__}: {e}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
