/**
 * The CI files (docs/CI.md) hold together: action.yml is a composite action whose run steps name a shell and
 * take inputs only through the environment (no `${{ inputs.* }}` spliced into a script), and uses only inputs
 * it declares; the example recipe is accepted by the real `bwq quantize` command; every YAML block of
 * docs/CI.md and the GitLab example parse, and the GitLab cache keys name at most two files.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { buildProgram } from '../../src/cli/main.js';
import { applyRecipe } from '../../src/cli/recipe-flags.js';
import { parseQuantizeOptions } from '../../src/cli/commands/quantize.js';
import { readRecipeFile } from '../../src/pipeline/recipe-file.js';

interface Step { id?: string; run?: string; shell?: string; uses?: string; with?: Record<string, unknown>; env?: Record<string, string> }

describe('CI files', () => {
  it('action.yml: a composite action; scripts get inputs through env; every input it uses is declared', () => {
    const text = readFileSync('action.yml', 'utf8');
    const action = parse(text) as { inputs: Record<string, unknown>; runs: { using: string; steps: Step[] } };
    expect(action.runs.using).toBe('composite');
    const runSteps = action.runs.steps.filter((s) => s.run !== undefined);
    expect(runSteps.length).toBeGreaterThanOrEqual(4);
    for (const step of runSteps) {
      expect(step.shell, step.run).toBe('bash');
      expect(step.run).not.toMatch(/\$\{\{\s*inputs\./);
    }
    const used = [...text.matchAll(/\$\{\{\s*inputs\.([\w-]+)\s*\}\}/g)].map((m) => m[1]!);
    for (const name of used) expect(Object.keys(action.inputs), name).toContain(name);
    // it quantizes from the recipe, evaluates with the gates, uploads even after a failed gate
    const scripts = runSteps.map((s) => s.run!).join('\n');
    expect(scripts).toMatch(/quantize --recipe "\$RECIPE"/);
    expect(scripts).toMatch(/--max-ppl-ratio "\$MAX_PPL_RATIO" --base "\$BASE"/);
    const upload = action.runs.steps.find((s) => s.uses?.startsWith('actions/upload-artifact'));
    expect(upload).toBeDefined();
    expect((upload as unknown as { if: string }).if).toMatch(/!cancelled\(\)/);
  });

  it('the example recipe is accepted by bwq quantize', async () => {
    const file = await readRecipeFile('examples/ci/sotu-w1a6.yaml');
    const program = buildProgram();
    const quantize = program.commands.find((c) => c.name() === 'quantize')!;
    const model = applyRecipe(quantize, file, undefined);
    const options = parseQuantizeOptions(model, { ...quantize.opts(), output: 'out/x' });
    expect(options).toMatchObject({ method: 'bwla', aBits: 6, nsamples: 32, seqlen: 512, rank: 8, seed: 0, device: 'cpu', statTokens: 512, sequential: 'block' });
  });

  it('docs/CI.md YAML blocks and the GitLab example parse; GitLab cache keys name at most two files', () => {
    const docs = readFileSync('docs/CI.md', 'utf8');
    const blocks = [...docs.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    for (const block of blocks) expect(() => parse(block)).not.toThrow();
    const gitlab = parse(readFileSync('examples/ci/gitlab-ci.yml', 'utf8')) as { quantize: { cache: { key: { files: string[] } }[]; script: string[] } };
    for (const cache of gitlab.quantize.cache) expect(cache.key.files.length).toBeLessThanOrEqual(2);
    expect(gitlab.quantize.script.join('\n')).toMatch(/--recipe "\$RECIPE"/);
  });
});
