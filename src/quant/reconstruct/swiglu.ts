/**
 * Gated SiLU of the Llama MLP: m = silu(g) ⊙ u, silu(z) = z·σ(z).
 * Backward: ∂g = ∂m ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g))),  ∂u = ∂m ⊙ silu(g).
 */
import { alloc, type Arr } from './gemm.js';

export function swigluForward<T extends Arr>(gate: T, up: Arr): T {
  const m = alloc(gate, gate.length);
  for (let i = 0; i < gate.length; i++) {
    const z = gate[i]!;
    m[i] = (z / (1 + Math.exp(-z))) * up[i]!;
  }
  return m;
}

export function swigluBackward<T extends Arr>(gate: T, up: Arr, g: Arr): { dGate: T; dUp: T } {
  const dGate = alloc(gate, gate.length);
  const dUp = alloc(gate, gate.length);
  for (let i = 0; i < gate.length; i++) {
    const z = gate[i]!;
    const s = 1 / (1 + Math.exp(-z));
    dGate[i] = g[i]! * up[i]! * s * (1 + z * (1 - s));
    dUp[i] = g[i]! * z * s;
  }
  return { dGate, dUp };
}
