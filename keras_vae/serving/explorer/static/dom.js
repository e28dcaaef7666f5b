// The page's elements and its status line.

/**
 * The element with this id.
 * @param {string} id
 * @returns {HTMLElement}
 */
export const $ = (id) => document.getElementById(id);

/**
 * Show `text` in the status line (#status), red when it reports an error.
 * @param {string} text
 * @param {boolean} [isError=false]
 */
export function setStatus(text, isError = false) {
  const el = $('status');
  el.textContent = text;
  el.classList.toggle('error', isError);
}

/**
 * Report an error in the status line and the console; the page stays usable.
 * @param {*} error
 */
export function fail(error) {
  setStatus('error: ' + (error && error.message ? error.message : error), true);
  console.error(error);
}

/**
 * The status line at rest: the backend and the last decode's time (ms).
 * @param {object} state the page's state (runtime.baseStatus, stats.lastDecodeMs).
 */
export function showSpeed(state) {
  const ms = state.stats.lastDecodeMs;
  setStatus(`${state.runtime.baseStatus} · last decode ${ms < 10 ? ms.toFixed(2) : ms.toFixed(0)} ms`);
}
