import { describe, expect, it } from 'vitest';
import { parseBwlaFlags } from '../../src/cli/bwla-flags.js';
import { parseQuantizeOptions } from '../../src/cli/commands/quantize.js';

describe('bwq quantize OKT / PSP flags', () => {
  it('parse into the quantize options', () => {
    const o = parseQuantizeOptions(undefined, {
      output: 'out/x', method: 'bwla', oktIterations: '200', oktTol: '1e-4', oktActWeight: '0.1', oktAnneal: '1,0.5,0.25',
      pspIterations: '6', pspTol: '0.001', pspWeighting: 'none', scaleRefit: 'none', compensationDamping: '0.3',
    } as Parameters<typeof parseQuantizeOptions>[1]);
    expect(o.oktIterations).toBe(200);
    expect(o.oktTolerance).toBe(1e-4);
    expect(o.oktActivationWeight).toBe(0.1);
    expect(o.oktAnneal).toEqual([1, 0.5, 0.25]);
    expect(o.pspIterations).toBe(6);
    expect(o.pspTolerance).toBe(0.001);
    expect(o.weightedPsp).toBe(false);
    expect(o.compensationDamping).toBe(0.3);
    expect(o.dataAwareScale).toBe(false);
    expect(parseBwlaFlags('bwla', { oktAnneal: 'none', pspWeighting: 'activation', scaleRefit: 'output' })).toEqual({ oktAnneal: [], weightedPsp: true, dataAwareScale: true });
    expect(parseBwlaFlags('bwla', {})).toEqual({});
  });

  it('refuses bad values and flags of another method in one line', () => {
    expect(() => parseBwlaFlags('bwla', { oktTol: '-1' })).toThrow('--okt-tol must be a non-negative number, got -1');
    expect(() => parseBwlaFlags('bwla', { oktAnneal: '1,0' })).toThrow('--okt-anneal values must be positive');
    expect(() => parseBwlaFlags('bwla', { pspWeighting: 'rms' })).toThrow('--psp-weighting must be none or activation (got "rms")');
    expect(() => parseBwlaFlags('bwla', { scaleRefit: 'yes' })).toThrow('--scale-refit must be none or output (got "yes")');
    expect(() => parseBwlaFlags('rtn', { oktIterations: '5' })).toThrow('--okt-iterations is a --method bwla option');
    expect(() => parseBwlaFlags('rtn', { scaleRefit: 'none' })).toThrow('--scale-refit is a --method bwla / bwta option');
    expect(() => parseBwlaFlags('bwla', { compensationDamping: '-0.1' })).toThrow('--compensation-damping must be a non-negative number, got -0.1');
    expect(() => parseBwlaFlags('billm', { compensationDamping: '0.1' })).toThrow('--compensation-damping is a --method bwla option');
    expect(() => parseBwlaFlags('bwla', { oktIterations: 'many' })).toThrow('--okt-iterations must be an integer, got "many"');
  });
});
