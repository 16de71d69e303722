/**
 * `bwq eval --tasks`: what needs no model reference. Malformed task files give one line naming the file and the
 * line; lm-eval's `_encode_pair` and input truncation on a character tokenizer; Python's whitespace and length;
 * log-likelihoods of a runner whose distributions are known in closed form; acc / acc_norm / stderr on numbers
 * worked out by hand.
 */
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../../src/model/config.js';
import { parseTaskLines } from '../../src/eval/task-file.js';
import { buildSequences, encodePair } from '../../src/eval/task-requests.js';
import { pythonLength, pythonRstrip } from '../../src/eval/python-whitespace.js';
import { scoreSequences } from '../../src/eval/tasks.js';
import { meanStderr, scoreQuestion, summarizeScores } from '../../src/eval/task-metrics.js';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const makeDir = tempDirs();
const GOOD = '{"task": "t", "context": "Question: a?\\nAnswer:", "choices": ["yes", "no"], "gold": 0}';

/** One id per UTF-16 unit (its code); "ab" is one token (id 1000) when `mergeAb`. */
function charTokenizer(mergeAb = false) {
  return {
    encode(text: string): Int32Array {
      const ids: number[] = [];
      for (let i = 0; i < text.length; i++) {
        if (mergeAb && text.startsWith('ab', i)) {
          ids.push(1000);
          i++;
        } else ids.push(text.charCodeAt(i));
      }
      return Int32Array.from(ids);
    },
  };
}
const codes = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));

describe('task files', () => {
  it('reads both forms, with lm-eval\'s default target delimiter " "', () => {
    const text = [
      GOOD,
      '',
      '{"task": "w", "contexts": ["A x", "A y"], "continuation": "went home.", "gold": 1, "doc_id": 7}',
      '{"task": "t", "context": "Q", "choices": ["1", "2", "3"], "gold": 2, "target_delimiter": ""}',
    ].join('\n');
    const qs = parseTaskLines(text, 'f.jsonl');
    expect(qs.map((q) => [q.task, q.line, q.gold])).toEqual([['t', 1, 0], ['w', 3, 1], ['t', 4, 2]]);
    expect(qs[0]!.pairs).toEqual([{ context: 'Question: a?\nAnswer:', continuation: ' yes' }, { context: 'Question: a?\nAnswer:', continuation: ' no' }]);
    expect(qs[0]!.choiceTexts).toEqual(['yes', 'no']);
    expect(qs[1]!.pairs).toEqual([{ context: 'A x', continuation: ' went home.' }, { context: 'A y', continuation: ' went home.' }]);
    expect(qs[1]!.choiceTexts).toEqual(['A x', 'A y']); // lm-eval normalizes Winogrande's acc_norm by the contexts
    expect(qs[2]!.pairs.map((p) => p.continuation)).toEqual(['1', '2', '3']);
  });

  const bad: [string, string, string][] = [
    ['bad JSON', `${GOOD}\n{"task": "t", "context": "Q", "choices": ["a", "b"], "gold": 0`, 'line 2: invalid JSON'],
    ['gold out of range', `${GOOD}\n${GOOD}\n{"task": "t", "context": "Q", "choices": ["a", "b"], "gold": 2}`, 'line 3: "gold" 2 is out of range for 2 choices'],
    ['gold not an integer', '{"task": "t", "context": "Q", "choices": ["a", "b"], "gold": "0"}', 'line 1: "gold" must be an integer index'],
    ['empty choices', `${GOOD}\n{"task": "t", "context": "Q", "choices": [], "gold": 0}`, 'line 2: "choices" has 0 entries, a question needs at least 2'],
    ['an empty choice', '{"task": "t", "context": "Q", "choices": ["a", ""], "gold": 0}', 'line 1: "choices"[1] is empty'],
    ['no task', '{"context": "Q", "choices": ["a", "b"], "gold": 0}', 'line 1: "task" must be a non-empty string'],
    ['an empty context', '{"task": "t", "context": " \\n", "choices": ["a", "b"], "gold": 0}', 'line 1: "context" is empty'],
    ['both forms', '{"task": "t", "context": "Q", "contexts": ["a", "b"], "continuation": "c", "gold": 0}', 'line 1: needs exactly one of'],
    ['contexts without continuation', '{"task": "t", "contexts": ["a", "b"], "gold": 0}', 'line 1: "continuation" must be a non-empty string'],
    ['not an object', '[1, 2]', 'line 1: expected a JSON object'],
    ['no questions', '\n\n', 'no questions'],
  ];
  for (const [name, text, message] of bad) {
    it(`refuses ${name} in one line naming the file and the line`, async () => {
      const file = join(makeDir('bwq-tasks-'), 'tasks.jsonl');
      writeFileSync(file, text);
      const r = await runCli('eval', '--tasks', file);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`${r.stderr.split('\n')[0]}\n`);
      expect(r.stderr.startsWith(`bwq: ${file}: ${message}`), r.stderr).toBe(true);
    });
  }

  it('refuses a missing file and bytes that are not UTF-8; with --json the error is the JSON object', async () => {
    const dir = makeDir('bwq-tasks-');
    const missing = join(dir, 'none.jsonl');
    const r = await runCli('eval', '--tasks', missing, '--json');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({ error: 'task file not found', file: missing });
    const binary = join(dir, 'bin.jsonl');
    writeFileSync(binary, Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d]));
    const b = await runCli('eval', '--tasks', binary);
    expect(b.code).toBe(1);
    expect(b.stderr).toBe(`bwq: ${binary}: not UTF-8 text (invalid UTF-8 at byte 1); expected a .jsonl task file\n`);
  });

  it('refuses flags of the perplexity mode with --tasks, and --bos without it (usage errors)', async () => {
    const file = join(makeDir('bwq-tasks-'), 'tasks.jsonl');
    writeFileSync(file, GOOD);
    for (const flags of [['--kld', 'models/sotu-llama'], ['--dataset', 'wikitext2'], ['--max-windows', '2']]) {
      const r = await runCli('eval', '--tasks', file, ...flags);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${flags[0]} does not apply with --tasks`);
    }
    expect((await runCli('eval', '--bos')).code).toBe(2);
    const long = await runCli('eval', '--tasks', file, '--seqlen', '4096');
    expect(long.code).toBe(2);
    expect(long.stderr).toContain('--seqlen 4096 exceeds the model\'s max_position_embeddings 1024');
  });
});

describe('requests as lm-eval builds them', () => {
  it('moves the context\'s trailing whitespace (Python\'s rstrip) to the continuation', () => {
    const tok = charTokenizer();
    const p = encodePair(tok, 'Answer: ', 'Paris');
    expect(Array.from(p.context)).toEqual(codes('Answer:'));
    expect(Array.from(p.continuation)).toEqual(codes(' Paris'));
    const q = encodePair(tok, 'Q\n\x1c', ' x'); // U+001C is whitespace to Python, not to JavaScript's \s
    expect(Array.from(q.continuation)).toEqual(codes('\n\x1c x'));
    expect(pythonRstrip('a \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000')).toBe('a');
    expect(pythonRstrip('a\ufeff')).toBe('a\ufeff');
    expect(pythonLength('a𝟙é')).toBe(3); // len('a𝟙é') in Python; 'a𝟙é'.length is 4
  });

  it('cuts long inputs on the left, drops the last token, and refuses what cannot be scored', () => {
    const tok = charTokenizer();
    const q = parseTaskLines('{"task": "t", "context": "abcdef", "choices": ["xy", "z"], "gold": 0}', 'f');
    const s = buildSequences(q, tok, { maxLength: 4, vocabSize: 2000, file: 'f' });
    // (ctx + cont)[-(4 + 1):][:-1]: "abcdef xy" → "ef xy" → "ef x"; target " xy"
    expect(Array.from(s[0]!.ids)).toEqual(codes('ef x'));
    expect(Array.from(s[0]!.target)).toEqual(codes(' xy'));
    expect(s[0]!.truncated).toBe(4);
    expect(Array.from(s[1]!.ids)).toEqual(codes('def '));
    const withBos = buildSequences(q, tok, { maxLength: 100, bos: 1, vocabSize: 2000, file: 'f' });
    expect(Array.from(withBos[1]!.ids)).toEqual([1, ...codes('abcdef ')]);
    expect(() => buildSequences(q, tok, { maxLength: 2, vocabSize: 2000, file: 'f' }))
      .toThrow('line 1: choice 0: the continuation has 3 tokens, more than the 2 the model can take');
    expect(() => buildSequences(q, tok, { maxLength: 100, vocabSize: 100, file: 'f' }))
      .toThrow('line 1: choice 0: the tokenizer produced id 100, outside the model\'s vocabulary (100)');
    const merged = parseTaskLines('{"task": "t", "context": "a", "choices": ["b", "c"], "gold": 0, "target_delimiter": ""}', 'f');
    expect(() => buildSequences(merged, charTokenizer(true), { maxLength: 100, vocabSize: 2000, file: 'f' }))
      .toThrow('line 1: choice 0: the continuation has no tokens of its own');
  });
});

describe('scores', () => {
  /** Logits at position t: ln 3 for the token at t, 0 elsewhere, over V = 4 (p = 1/2 for it, 1/6 for others). */
  const echoRunner = {
    calls: [] as [number, number][],
    config: { vocabSize: 4 } as ModelConfig,
    async logits(ids: Int32Array, batch: number, seq: number): Promise<Float32Array> {
      this.calls.push([batch, seq]);
      const out = new Float32Array(batch * seq * 4);
      for (let i = 0; i < batch * seq; i++) out[i * 4 + ids[i]!] = Math.log(3);
      return out;
    },
  };

  it('sums the log-probabilities of the continuation\'s tokens, batching inputs of equal length only', async () => {
    const seq = (ids: number[], target: number[]) => ({ question: 0, choice: 0, ids: Int32Array.from(ids), target: Int32Array.from(target), truncated: 0 });
    const sequences = [
      seq([0, 1, 2], [3, 3]), // positions 1, 2 predict 3, 3: the inputs there are 1 and 2 → ln(1/6) twice
      seq([0, 1, 1, 1], [1]), // position 3 (token 1) predicts 1 → ln(1/2)
      seq([2, 2, 2], [2, 0, 2]), // positions 0, 1, 2 (token 2) predict 2, 0, 2 → ln(1/2) + ln(1/6) + ln(1/2)
      seq([3, 3, 3], [3]),
    ];
    echoRunner.calls = [];
    const ll = await scoreSequences(echoRunner, sequences, { batch: 8 });
    const half = Math.log(0.5);
    const sixth = Math.log(1 / 6);
    expect(ll[0]).toBeCloseTo(2 * sixth, 6);
    expect(ll[1]).toBeCloseTo(half, 6);
    expect(ll[2]).toBeCloseTo(2 * half + sixth, 6);
    expect(ll[3]).toBeCloseTo(half, 6);
    expect(echoRunner.calls).toEqual([[1, 4], [3, 3]]); // longest first, same-length inputs together
    echoRunner.calls = [];
    expect(Array.from(await scoreSequences(echoRunner, sequences, { batch: 2 }))).toEqual(Array.from(ll));
    expect(echoRunner.calls).toEqual([[1, 4], [2, 3], [1, 3]]);
  });

  it('acc is the argmax of the log-likelihoods, acc_norm of them over the choices\' characters', () => {
    const q = parseTaskLines('{"task": "t", "context": "Q", "choices": ["a", "𝟙𝟚𝟛𝟜"], "gold": 1}', 'f')[0]!;
    // acc picks 0 (−2 > −6), acc_norm picks 1 (−6/4 > −2/1)
    const s = scoreQuestion(q, [-2, -6]);
    expect([s.pred, s.predNorm]).toEqual([0, 1]);
    // lengths are code points as Python's len: −2/2 > −3/2 (with UTF-16 units, −3/4 would win)
    const cp = parseTaskLines('{"task": "t", "context": "Q", "choices": ["ab", "𝟙𝟚"], "gold": 0}', 'f')[0]!;
    expect(scoreQuestion(cp, [-2, -3]).predNorm).toBe(0);
    expect(scoreQuestion(q, [-3, -3]).pred).toBe(0); // ties go to the first, as numpy's argmax
    const m = meanStderr([1, 0, 1, 1]); // mean 3/4; sample sd √(3/16 · 4/3) = 1/2; stderr 1/2 / √4
    expect(m.mean).toBe(0.75);
    expect(m.stderr).toBeCloseTo(0.25, 15);
    expect(meanStderr([1]).stderr).toBeNull();
    const summary = summarizeScores([
      { task: 'b', line: 1, logliks: [0, -1], gold: 0, pred: 0, predNorm: 1 },
      { task: 'a', line: 2, logliks: [0, -1], gold: 0, pred: 0, predNorm: 0 },
      { task: 'b', line: 3, logliks: [0, -1], gold: 1, pred: 0, predNorm: 1 },
    ]);
    expect(summary.tasks.map((t) => [t.task, t.questions, t.acc, t.accNorm])).toEqual([['b', 2, 0.5, 0.5], ['a', 1, 1, 1]]);
    expect(summary.overall.acc).toBeCloseTo(2 / 3, 15);
    expect(summary.overall.accStderr).toBeCloseTo(Math.sqrt(1 / 3) / Math.sqrt(3), 15);
  });
});
