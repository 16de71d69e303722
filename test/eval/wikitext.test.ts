/**
 * The bundled WikiText-2 test split and `--dataset wikitext2`: the file is the published one (size, sha256),
 * the GPTQ protocol's text ("\n\n".join(rows), blank lines as empty rows) has the documented length, and the
 * CLI evaluates it.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readWikitext2, WIKITEXT2_FILE, wikitextProtocolText } from '../../src/eval/wikitext.js';
import { runCli } from '../helpers/run-cli.js';

describe('WikiText-2 (raw) test split', () => {
  it('is the published file, and the protocol text has 1,294,336 characters', async () => {
    const bytes = readFileSync(WIKITEXT2_FILE);
    expect(bytes.length).toBe(1_290_590);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe('173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08');
    expect((await readWikitext2()).length).toBe(1_294_336);
  });

  it('joins rows with a blank line between them, a " \\n" line being the empty row', () => {
    expect(wikitextProtocolText(' \n = Title = \n \n text\n')).toBe('\n\n = Title = \n\n\n\n\n text\n');
    expect(wikitextProtocolText('a\nb')).toBe('a\n\n\nb');
  });

  it('bwq eval --dataset wikitext2 runs the bundled split', async () => {
    const r = await runCli('eval', '--dataset', 'wikitext2', '--seqlen', '128', '--max-windows', '2', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { dataset: string; windows: number; tokens: number; ppl: number };
    expect(out.dataset).toBe(WIKITEXT2_FILE);
    expect(out.windows).toBe(2);
    expect(out.tokens).toBe(2 * 127);
    expect(out.ppl).toBeGreaterThan(1);
  });
});
