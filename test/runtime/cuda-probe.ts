/** Whether this machine has a usable CUDA device for the runtime (tests that need its absence skip otherwise). */
import { loadAddon } from '../../src/native/loader.js';

export function cudaAvailable(): boolean {
  try {
    return (loadAddon() as unknown as { cudaInit(): { ok: boolean } }).cudaInit().ok;
  } catch {
    return false;
  }
}
