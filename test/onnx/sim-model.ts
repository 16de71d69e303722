/** Builds simulated (rotated, recipe-carrying) model directories from float fixtures for tests. */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openModelDir } from '../../src/model/model-dir.js';
import { writeSafetensors } from '../../src/safetensors/writer.js';
import type { LayerRecipe, LinearRole } from '../../src/quant/recipe.js';
import { fuseRotation, lcg, randomOrthogonal } from './helpers.js';

export type Group = 'attn_in' | 'attn_out' | 'mlp_in' | 'mlp_out';
export const GROUP_OF: Record<LinearRole, Group> = {
  q_proj: 'attn_in', k_proj: 'attn_in', v_proj: 'attn_in', o_proj: 'attn_out',
  gate_proj: 'mlp_in', up_proj: 'mlp_in', down_proj: 'mlp_out',
};

function factor(n: number): [number, number] {
  let a = Math.floor(Math.sqrt(n));
  while (n % a !== 0) a--;
  return [a, n / a];
}

/** Writes DIR with fused rotations (all linears) and recipes given per layer. */
export async function makeSimulated(src: string, dir: string, recipe: (layer: number, rot: (g: Group) => { kind: 'kronecker'; r1: string; r2: string }) => LayerRecipe): Promise<void> {
  const model = await openModelDir(src);
  const { config, checkpoint } = model;
  const tensors = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  for (const name of checkpoint.names()) {
    tensors.set(name, await checkpoint.readFloat32(name));
    shapes.set(name, checkpoint.info(name).shape);
  }
  const layers: LayerRecipe[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const rot = (g: Group) => ({ kind: 'kronecker' as const, r1: `model.layers.${l}.${g}.okt_r1`, r2: `model.layers.${l}.${g}.okt_r2` });
    const sizes: Record<Group, number> = {
      attn_in: config.hiddenSize, attn_out: config.numHeads * config.headDim, mlp_in: config.hiddenSize, mlp_out: config.intermediateSize,
    };
    const mats = new Map<Group, { r1: Float32Array; r2: Float32Array; a: number; b: number }>();
    for (const g of Object.keys(sizes) as Group[]) {
      const [a, b] = factor(sizes[g]);
      const m = { r1: randomOrthogonal(a, lcg(l * 10 + a)), r2: randomOrthogonal(b, lcg(l * 10 + b + 500)), a, b };
      mats.set(g, m);
      tensors.set(rot(g).r1, m.r1);
      shapes.set(rot(g).r1, [a, a]);
      tensors.set(rot(g).r2, m.r2);
      shapes.set(rot(g).r2, [b, b]);
    }
    const names = model.weightNames.layers[l]!;
    const byRole: Record<LinearRole, string | undefined> = {
      q_proj: names.q.weight, k_proj: names.k.weight, v_proj: names.v.weight, o_proj: names.o.weight,
      gate_proj: names.gate?.weight, up_proj: names.up.weight, down_proj: names.down.weight,
    };
    for (const [role, name] of Object.entries(byRole) as [LinearRole, string | undefined][]) {
      if (name === undefined) continue;
      const m = mats.get(GROUP_OF[role])!;
      const [out] = shapes.get(name)!;
      tensors.set(name, fuseRotation(tensors.get(name)!, out!, m.r1, m.r2, m.a, m.b));
    }
    layers.push(recipe(l, rot));
  }
  await writeSafetensors(join(dir, 'model.safetensors'), [...tensors].map(([name, data]) => ({ name, dtype: 'F32' as const, shape: shapes.get(name)!, data })));
  const raw = JSON.parse(await readFile(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  raw['quantization_config'] = {
    quant_method: 'bwq', bwq_version: '0.1.0', method: 'rtn', w_bits: 1, a_bits: 16, layers, packed_weights: 'model.packed.safetensors', settings: {},
  };
  raw['dtype'] = 'float32';
  await writeFile(join(dir, 'config.json'), JSON.stringify(raw));
  await copyFile(join(src, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  await checkpoint.close();
}

