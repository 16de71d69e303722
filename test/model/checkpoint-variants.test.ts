/**
 * Checkpoints as published models ship them: config.json with `dtype` (transformers 5) instead of
 * `torch_dtype`, unused extra tensors (rotary `inv_freq` buffers), and mixed dtypes (float32 norms, one float16
 * linear among bf16 ones). The bundled model rewritten that way evaluates on both engines like the original
 * (up to the float16 rounding of one linear), and quantizes.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/run-cli.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { writeSafetensors, type TensorToWrite } from '../../src/safetensors/writer.js';

const root = mkdtempSync(join(tmpdir(), 'bwq-variants-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const EVAL = ['--seqlen', '128', '--max-windows', '4', '--json'];

/** float32 → float16 bits, round to nearest (normal range; these weights are small and finite). */
function toF16(v: number): number {
  const u = new Uint32Array(Float32Array.of(v).buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 112;
  if (exp <= 0) return sign;
  return sign | ((exp << 10) + (((u & 0x7fffff) + 0x1000) >>> 13));
}

async function variant(): Promise<string> {
  const dir = join(root, 'model');
  mkdirSync(dir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) copyFileSync(join('models/sotu-llama', f), join(dir, f));
  const config = JSON.parse(readFileSync('models/sotu-llama/config.json', 'utf8')) as Record<string, unknown>;
  delete config['torch_dtype'];
  config['dtype'] = 'bfloat16';
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const src = await SafetensorsFile.open('models/sotu-llama/model.safetensors');
  const tensors: TensorToWrite[] = [];
  for (const name of src.names()) {
    const info = src.info(name);
    if (name.endsWith('norm.weight')) {
      tensors.push({ name, dtype: 'F32', shape: info.shape, data: Float32Array.from(await src.readFloat32(name)) });
    } else if (name === 'model.layers.1.mlp.down_proj.weight') {
      const f = await src.readFloat32(name);
      tensors.push({ name, dtype: 'F16', shape: info.shape, data: new Uint8Array(Uint16Array.from(f, toF16).buffer) });
    } else {
      tensors.push({ name, dtype: info.dtype, shape: info.shape, data: Uint8Array.from(await src.readBytes(name)) });
    }
  }
  await src.close();
  for (let l = 0; l < 4; l++) {
    tensors.push({ name: `model.layers.${l}.self_attn.rotary_emb.inv_freq`, dtype: 'F32', shape: [16], data: new Float32Array(16).fill(1) });
  }
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return dir;
}

describe('checkpoint variants', () => {
  it('dtype instead of torch_dtype, extra inv_freq tensors, mixed f32 / bf16 / f16: evaluates and quantizes', async () => {
    const dir = await variant();
    const ppl = async (model: string, backend: string): Promise<number> => {
      const r = await runCli('eval', model, '--backend', backend, ...(backend === 'native' ? ['--device', 'cpu'] : []), ...EVAL);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).ppl as number;
    };
    const original = await ppl('models/sotu-llama', 'onnx');
    for (const backend of ['onnx', 'native']) expect(Math.abs((await ppl(dir, backend)) / original - 1)).toBeLessThan(1e-4);
    const out = join(root, 'q');
    const q = await runCli('quantize', dir, '-o', out, '--method', 'rtn', '--nsamples', '2', '--seqlen', '64', '--stat-tokens', '64', '--device', 'cpu');
    expect(q.code, q.stderr).toBe(0);
    const [a, b] = [await ppl(out, 'onnx'), await ppl(out, 'native')];
    expect(Math.abs(a / b - 1)).toBeLessThan(0.01);
    expect(a).toBeGreaterThan(original);
  }, 120_000);
});
