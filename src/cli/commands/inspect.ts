/**
 * `bwq inspect PATH [--json] [--tensors]`: what is inside a model directory, a .safetensors file
 * or a model.safetensors.index.json — architecture, parameters, dtypes, tensors, metadata and, for
 * bwq outputs, the quantization recipe summary and packed size.
 */
import type { Command } from 'commander';
import { basename } from 'node:path';
import { inspectPath, type InspectReport, type TensorGroup, type TensorRow } from '../../model/summary.js';
import { printResult } from '../output.js';

interface InspectFlags {
  json?: boolean;
  tensors?: boolean;
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('show architecture, parameters, dtypes, tensors and quantization of a model dir, .safetensors file or index JSON')
    .argument('<PATH>', 'model directory, .safetensors file or model.safetensors.index.json')
    .option('--tensors', 'list every tensor (directories are summarized by default)')
    .option('--json', 'print one JSON object')
    .action(async (path: string, flags: InspectFlags) => {
      const report = await inspectPath(path, { listTensors: flags.tensors === true });
      printResult(flags.json === true, report, () => formatInspect(report));
    });
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
}

function shapeText(shape: readonly number[] | undefined): string {
  return shape === undefined ? '[various]' : `[${shape.join(', ')}]`;
}

function table(rows: string[][], indent = '  '): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length); });
  return rows.map((row) => indent + row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}

function modelLines(report: InspectReport): string[] {
  const m = report.model;
  if (m === undefined) return [];
  const lines = [`architecture  ${m.architecture}${m.modelType !== m.architecture ? ` (model_type ${m.modelType})` : ''}`];
  lines.push(`dimensions    hidden ${m.hiddenSize}, intermediate ${m.intermediateSize}, layers ${m.numLayers}, heads ${m.numHeads}`
    + ` (kv ${m.numKvHeads}), head_dim ${m.headDim}, vocab ${m.vocabSize}, max positions ${m.maxPositionEmbeddings}`);
  const rope = m.rope === undefined ? 'learned positions'
    : `rope ${m.rope.type} theta ${m.rope.theta}${m.rope.factor !== undefined ? ` factor ${m.rope.factor}` : ''}`;
  const extras = [
    m.tieWordEmbeddings ? 'tied embeddings' : 'separate lm_head',
    m.attentionBias ? 'attention bias' : undefined,
    m.mlpBias ? 'mlp bias' : undefined,
    m.qkNorm ? 'q/k norm' : undefined,
    m.slidingWindow !== undefined ? `sliding window ${m.slidingWindow}` : undefined,
  ].filter((x) => x !== undefined);
  lines.push(`blocks        ${m.normKind === 'rms' ? 'RMSNorm' : 'LayerNorm'} eps ${m.normEps}, ${m.hiddenAct}, ${rope}, ${extras.join(', ')}`);
  return lines;
}

function tensorLines(report: InspectReport): string[] {
  const lines: string[] = [];
  if (report.tensors !== undefined) {
    lines.push(`tensors (${report.tensorCount})`);
    const multi = report.files.length > 1;
    lines.push(...table(report.tensors.map((t: TensorRow) => [t.name, t.dtype, shapeText(t.shape), ...(multi ? [basename(t.file)] : [])]), '  '));
  } else if (report.tensorGroups !== undefined) {
    lines.push(`tensors (${report.tensorCount} in ${report.tensorGroups.length} groups; --tensors lists each)`);
    lines.push(...table(report.tensorGroups.map((g: TensorGroup) => [
      g.pattern, g.dtype, shapeText(g.shape), g.count > 1 ? `x${g.count}` : '',
    ]), '  '));
  }
  return lines;
}

function quantizationLines(report: InspectReport): string[] {
  const lines: string[] = [];
  const q = report.quantization;
  if (q !== undefined) {
    lines.push(`quantization  bwq ${q.method}: w_bits ${q.wBits}, a_bits ${q.aBits} (bwq ${q.bwqVersion})`);
    lines.push(`recipe        ${q.quantizedLinears} linears with quantized inputs, ${q.rotatedLinears} with online rotations; ${q.packedWeights === undefined ? `no packed model (${q.method} is simulated only)` : `packed weights in ${q.packedWeights}`}`);
    const settings = Object.entries(q.settings).map(([k, v]) => `${k}=${v}`).join(', ');
    if (settings !== '') lines.push(`settings      ${settings}`);
  }
  const p = report.packed;
  if (p !== undefined) {
    const ratio = p.packedLinearBytes > 0 ? p.linearFloat32Bytes / p.packedLinearBytes : 0;
    lines.push(`packed        ${p.packedLinears} packed linears (${p.lowRankLinears} with low-rank terms) in ${basename(p.file)}`
      + `${p.format !== undefined ? ` [${p.format}]` : ''}`);
    lines.push(`packed size   ${formatBytes(p.packedLinearBytes)} for ${formatCount(p.linearParameters)} linear weights`
      + ` vs ${formatBytes(p.linearFloat32Bytes)} float32 / ${formatBytes(p.linearFloat16Bytes)} 16-bit`
      + ` (${ratio.toFixed(1)}x smaller than float32)${p.inFeaturesApproximate ? ' (in_features rounded up to 32)' : ''};`
      + ` file ${formatBytes(p.fileBytes)}`);
    if (report.kind === 'model-dir') lines.push(`              float checkpoint ${formatBytes(report.fileBytes)}`);
    const b = p.bits;
    lines.push(`bits/weight   ${b.perWeight.toFixed(3)} over the ${formatCount(b.originalParameters)} parameters of the original model`
      + ` (the whole packed file); the quantized linears alone ${b.linearsPerWeight.toFixed(3)}`);
    lines.push(`              ${b.classes.map((c) => `${c.name} ${c.bitsPerWeight.toFixed(3)}`).join(', ')}`);
  }
  return lines;
}

export function formatInspect(report: InspectReport): string {
  const kindText = report.kind === 'model-dir' ? 'model directory' : report.kind === 'index' ? 'sharded checkpoint index' : 'safetensors file';
  const lines = [`${report.path} (${kindText})`];
  lines.push(...modelLines(report));
  lines.push(`files         ${report.files.map((f) => `${basename(f.path)} (${formatBytes(f.bytes)})`).join(', ')}`);
  lines.push(`parameters    ${formatCount(report.parameterCount)} in ${report.tensorCount} tensors (${formatBytes(report.dataBytes)})`);
  lines.push('dtypes');
  lines.push(...table(Object.entries(report.dtypes).map(([d, s]) => [
    d, plural(s.tensors, 'tensor'), plural(s.parameters, 'value'), formatBytes(s.bytes),
  ]), '  '));
  const metaEntries = Object.entries(report.metadata).filter(([, m]) => Object.keys(m).length > 0);
  const metaTexts = [...new Set(metaEntries.map(([, m]) => Object.entries(m).map(([k, v]) => `${k}=${v}`).join(', ')))];
  if (metaTexts.length === 1) lines.push(`metadata      ${metaTexts[0]}`);
  else for (const [file, m] of metaEntries) lines.push(`metadata      ${basename(file)}: ${Object.entries(m).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  lines.push(...quantizationLines(report));
  lines.push(...tensorLines(report));
  return lines.join('\n');
}
