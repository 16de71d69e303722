/** A recipe as `bwq quantize` writes it (2 layers, BWTA with Kronecker rotations on the MLP input). */
export function exampleQuantizationConfig(numLayers = 2): Record<string, unknown> {
  const tern = { kind: 'ternary', thresholdRatio: 0.7 };
  const layer = (i: number): Record<string, unknown> => ({
    linears: {
      q_proj: { quantizer: tern }, k_proj: { quantizer: tern }, v_proj: { quantizer: tern },
      o_proj: { quantizer: { kind: 'int', bits: 8, clipRatio: 1 } },
      gate_proj: { quantizer: tern, rotation: { kind: 'kronecker', r1: `model.layers.${i}.mlp_in.okt_r1`, r2: `model.layers.${i}.mlp_in.okt_r2` } },
      up_proj: { quantizer: tern, rotation: { kind: 'kronecker', r1: `model.layers.${i}.mlp_in.okt_r1`, r2: `model.layers.${i}.mlp_in.okt_r2` } },
      down_proj: { quantizer: { kind: 'none' } },
    },
    attention: { query: tern, key: tern, probs: { kind: 'int', bits: 8, clipRatio: 1 }, value: { kind: 'binary' } },
  });
  return {
    quant_method: 'bwq', bwq_version: '0.1.0', method: 'bwta', w_bits: 1, a_bits: 'ternary',
    layers: Array.from({ length: numLayers }, (_, i) => layer(i)),
    packed_weights: 'model.packed.safetensors',
    settings: { nsamples: 16, seqlen: 128, rank: 8, seed: 0, calib: 'calibration/sotu-calib.txt', okt: true },
  };
}
