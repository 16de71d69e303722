import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadCalibrationWindows, sampleWindows } from '../../src/data/calibration.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { BwqError } from '../../src/errors.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

describe('calibration windows', () => {
  const tokens = Int32Array.from({ length: 1000 }, (_, i) => i);

  it('draws nsamples windows of consecutive tokens, reproducibly per seed', () => {
    const a = sampleWindows(tokens, 6, 50, 7);
    const b = sampleWindows(tokens, 6, 50, 7);
    const c = sampleWindows(tokens, 6, 50, 8);
    expect(Array.from(a.ids)).toEqual(Array.from(b.ids));
    expect(Array.from(a.starts)).not.toEqual(Array.from(c.starts));
    expect(a.ids.length).toBe(300);
    for (let w = 0; w < 6; w++) {
      const start = a.starts[w]!;
      expect(start).toBeGreaterThanOrEqual(0);
      expect(start).toBeLessThanOrEqual(950);
      for (let t = 0; t < 50; t++) expect(a.ids[w * 50 + t]).toBe(start + t);
    }
  });

  it('rejects a text shorter than one window', () => {
    expect(() => sampleWindows(tokens.subarray(0, 10), 1, 50, 0)).toThrow(BwqError);
  });

  it('tokenizes the bundled calibration text with the bundled tokenizer', async () => {
    const tok = await loadTokenizer(`${root}models/sotu-llama`);
    const w = await loadCalibrationWindows(`${root}calibration/sotu-calib.txt`, tok, { nsamples: 4, seqlen: 64, seed: 0, vocabSize: 4096 });
    expect(w.textTokens).toBeGreaterThan(50_000);
    expect(w.ids.length).toBe(256);
    for (const id of w.ids) expect(id).toBeLessThan(4096);
    // the window decodes back to a substring of the text
    const text = tok.decode(w.ids.subarray(0, 64));
    expect(text.length).toBeGreaterThan(100);
  });
});
