// supnet console: draws every chart whose option the server rendered into a JSON block (no inline script, no
// network: ECharts is served from this console). window.supnetCharts counts the charts drawn (the browser tests
// wait for it).
(function () {
  "use strict";
  window.supnetCharts = 0;
  function draw(root) {
    if (typeof echarts === "undefined") { return; }
    root.querySelectorAll("[data-chart]").forEach(function (element) {
      if (element.dataset.drawn) { return; }
      var source = document.getElementById(element.dataset.chart);
      if (!source) { return; }
      var chart = echarts.init(element, null, { renderer: "canvas" });
      var option = JSON.parse(source.textContent);
      option.animation = false;  // drawn at once: a screenshot or a slow office PC sees the final chart
      option.textStyle = option.textStyle || { fontFamily: getComputedStyle(document.body).fontFamily };
      chart.setOption(option);
      element.dataset.drawn = "1";
      window.addEventListener("resize", function () { chart.resize(); });
      window.supnetCharts += 1;
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (event) { draw(event.target.parentNode || document); });
})();
