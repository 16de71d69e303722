/**
 * The BWLA (OKT / PSP) settings and statistics as the quantize pipeline passes and records them: the
 * optional option fields resolved against BWLA_DEFAULTS, the per-linear binarization errors and the
 * per-group rotation statistics of quantize-report.json (docs/ALGORITHMS.md §OKT).
 */
import { BWLA_DEFAULTS, type GroupSettings, type QuantizedGroup, type QuantizedLinear } from './layer-quant.js';
import { GAUSSIAN_BINARIZATION_ERROR } from './okt-stats.js';

/** The BWLA fields of the quantize options (all optional; BWLA_DEFAULTS fill the gaps). */
export interface BwlaOptionFields {
  oktTolerance?: number;
  oktActivationWeight?: number;
  oktAnneal?: readonly number[];
  oktAnnealIterations?: number;
  pspTolerance?: number;
  compensationDamping?: number;
}

type BwlaSettings = Required<Pick<GroupSettings, 'oktTolerance' | 'oktActivationWeight' | 'oktAnneal' | 'oktAnnealIterations' | 'pspTolerance' | 'compensationDamping'>>;

export function bwlaSettings(o: BwlaOptionFields): BwlaSettings {
  return {
    oktTolerance: o.oktTolerance ?? BWLA_DEFAULTS.oktTolerance,
    oktActivationWeight: o.oktActivationWeight ?? BWLA_DEFAULTS.oktActivationWeight,
    oktAnneal: o.oktAnneal ?? BWLA_DEFAULTS.oktAnneal,
    oktAnnealIterations: o.oktAnnealIterations ?? BWLA_DEFAULTS.oktAnnealIterations,
    pspTolerance: o.pspTolerance ?? BWLA_DEFAULTS.pspTolerance,
    compensationDamping: o.compensationDamping ?? BWLA_DEFAULTS.compensationDamping,
  };
}

/** The same settings for config.json's quantization_config.settings (scalars only). */
export function bwlaConfigSettings(o: BwlaOptionFields & { method: string }): Record<string, string | number> {
  if (o.method !== 'bwla') return {};
  const s = bwlaSettings(o);
  return {
    okt_tolerance: s.oktTolerance,
    okt_activation_weight: s.oktActivationWeight,
    okt_anneal: s.oktAnneal.length === 0 ? 'none' : s.oktAnneal.join(','),
    okt_anneal_iterations: s.oktAnnealIterations,
    psp_tolerance: s.pspTolerance,
    compensation_damping: s.compensationDamping,
  };
}

export function binarizationReport(q: QuantizedLinear): { plain: number; rotated: number; gaussian: number } {
  return { plain: q.binarizationError.plain, rotated: q.binarizationError.rotated, gaussian: GAUSSIAN_BINARIZATION_ERROR };
}

export function rotationReport(r: NonNullable<QuantizedGroup['rotation']>): {
  oktIterations: number; oktConverged: boolean; crestFactor: { before: number; after: number }; activationTail: { before: number; after: number };
} {
  return { oktIterations: r.iterations, oktConverged: r.converged, crestFactor: r.crestFactor, activationTail: r.activationTail };
}
