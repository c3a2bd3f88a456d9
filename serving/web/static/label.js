// Labeling page shortcuts: Ctrl+Enter submit, Ctrl+Space play/pause, Ctrl+R replay from the start
// (instead of reloading the page), Alt+1/2/3 toggle the flags. Also times the task for the report.
(() => {
  "use strict";
  const form = document.getElementById("label-form");
  if (!form) return;
  const player = document.getElementById("player");
  const started = performance.now();
  const flagBoxes = Array.from(form.querySelectorAll("input[name=flags]"));

  form.addEventListener("submit", () => {
    document.getElementById("seconds_spent").value = ((performance.now() - started) / 1000).toFixed(1);
  });

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey && e.key === "Enter") {
      e.preventDefault();
      form.requestSubmit();
    } else if (e.ctrlKey && e.code === "Space") {
      e.preventDefault();
      if (player.paused) player.play(); else player.pause();
    } else if (e.ctrlKey && e.code === "KeyR") {
      e.preventDefault();  // replay, never reload (a reload would lose the typed text)
      player.currentTime = 0;
      player.play();
    } else if (e.altKey && !e.ctrlKey && /^Digit[1-9]$/.test(e.code)) {
      const box = flagBoxes[Number(e.code.slice(5)) - 1];
      if (box) {
        e.preventDefault();
        box.checked = !box.checked;
      }
    }
  });
})();
