export {
  BACKEND_NAMES,
  currentBackend,
  selectBackend,
  type BackendInfo,
  type BackendName,
  type SelectBackendOptions,
} from './select.js';
export {
  WASM_TRAINING_KERNELS,
  conv2DBackpropInputComposedKernel,
  originalWasmKernel,
  registerWasmTrainingKernels,
} from './wasm-kernels.js';
