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
export { NATIVE_TRAINING_KERNELS, registerNativeTrainingKernels } from './native-kernels.js';
