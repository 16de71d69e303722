export { gemm, transpose, transposeF32, identity, frobeniusNorm, orthogonalityError, toFloat32, toFloat64, type Floats } from './dense.js';
export { qr } from './qr.js';
export { svd, type Svd } from './svd.js';
export { procrustes, procrustesAlign } from './procrustes.js';
export { randomizedSvd, type TruncatedSvd } from './randomized-svd.js';
export { Rng } from './random.js';
export { jsMatmul, type Matmul, type MatmulOptions, type Numerics, type RotateRows } from './matmul.js';
