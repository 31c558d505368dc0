// Forms marked data-confirm="question" ask before they submit. A listener in a file rather than
// an inline onsubmit handler, which the pages' Content-Security-Policy (script-src 'self') blocks.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
