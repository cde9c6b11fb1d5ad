// talkingface live player: microphone or typed text -> the server's /live/ws -> frames on a canvas (+ their audio).
// Loaded by the page's <head> (Gradio does not run scripts inside gr.HTML) and by the bare /live page; the
// player's markup (#tf-live) may appear later, so clicks are handled by delegation on the document.
// Everything is local: the socket goes to the page's own server, the audio worklet is a blob: URL.
(function () {
  "use strict";
  if (window.talkingfaceLive) return;
  const SR = 16000, CHUNK = 1600; // 100 ms of 16 kHz audio per message
  const WORKLET = `class TfCapture extends AudioWorkletProcessor {
    process(inputs) { const c = inputs[0] && inputs[0][0]; if (c) this.port.postMessage(c.slice(0)); return true; }
  }
  registerProcessor("tf-capture", TfCapture);`;

  const state = {
    running: false, frames: 0, repeated: 0, bytes: 0, lastIndex: -1, lastLatency: null, fps: 0,
    arrivals: [], diffs: [], stats: null, messages: [], errors: [], ended: null, width: 0, height: 0,
  };
  window.talkingfaceLive = state; // read by tests (page.evaluate) and curious people

  let ws = null, ctx = null, mic = null, node = null, playhead = 0, prevThumb = null, pending = [], raf = 0;
  const $ = (id) => document.getElementById(id);
  const status = (s) => { const e = $("tf-live-status"); if (e) e.textContent = s; };

  function showStats() {
    const e = $("tf-live-stats");
    if (!e) return;
    const s = state.stats || {};
    const lat = s.latency_ms_median != null ? `${s.latency_ms_median} ms median, ${s.latency_ms_p95} ms p95` : "-";
    e.textContent = `fps: ${state.fps.toFixed(1)} received | latency (audio in -> frame out): ${lat} | ` +
      `frames ${state.frames}, repeated ${s.repeated ?? 0}, silence inserted ${s.silence_inserted_s ?? 0} s`;
  }

  function setButtons(running) {
    if ($("tf-live-start")) $("tf-live-start").disabled = running;
    if ($("tf-live-stop")) $("tf-live-stop").disabled = !running;
    if ($("tf-live-say")) $("tf-live-say").disabled = !(running && mode() === "text");
  }

  // the head motion: window.talkingfaceLiveOptions (an embedding page, tests), else the Photo tab's choice
  function headMotion() {
    const forced = (window.talkingfaceLiveOptions || {}).head_motion;
    if (forced) return forced;
    const picked = document.querySelector("#head-motion input:checked");
    return picked && ["natural", "subtle", "still"].includes(picked.value) ? picked.value : "natural";
  }

  function mode() {
    const r = document.querySelector("input[name=tf-live-source]:checked");
    return r ? r.value : "audio";
  }

  // a 32x32 grey thumbnail of each frame; diffs[] holds the mean change from the previous frame (tests)
  const thumbCanvas = document.createElement("canvas");
  thumbCanvas.width = thumbCanvas.height = 64;
  function recordChange(bitmap) {
    const t = thumbCanvas.getContext("2d", { willReadFrequently: true });
    t.drawImage(bitmap, 0, 0, 64, 64);
    const px = t.getImageData(0, 0, 64, 64).data;
    const g = new Float32Array(64 * 64);
    for (let i = 0; i < g.length; i++) g[i] = (px[4 * i] + px[4 * i + 1] + px[4 * i + 2]) / 3;
    if (prevThumb) {
      let d = 0, m = 0;
      for (let i = 0; i < g.length; i++) { const a = Math.abs(g[i] - prevThumb[i]); d += a; if (a > m) m = a; }
      state.diffs.push({ mean: d / g.length, max: m });
      if (state.diffs.length > 500) state.diffs.shift();
    }
    prevThumb = g;
  }

  function draw(item) {
    const c = $("tf-live-canvas");
    if (c) {
      if (c.width !== item.bitmap.width || c.height !== item.bitmap.height) {
        c.width = item.bitmap.width; c.height = item.bitmap.height;
      }
      c.getContext("2d").drawImage(item.bitmap, 0, 0);
    }
    recordChange(item.bitmap);
    item.bitmap.close();
    state.lastIndex = item.head.i;
  }

  // frames with audio are drawn when their audio starts playing; frames without audio at once
  function tick() {
    raf = 0;
    while (pending.length && (!ctx || pending[0].at <= ctx.currentTime + 0.005)) draw(pending.shift());
    if (pending.length) raf = requestAnimationFrame(tick);
  }

  async function onFrame(buf) {
    const dv = new DataView(buf);
    const n = dv.getUint32(0, true);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
    const a0 = 4 + n, a1 = a0 + 4 * head.na;
    const bitmap = await createImageBitmap(new Blob([buf.slice(a1)], { type: "image/jpeg" }));
    const now = performance.now();
    state.frames++; state.bytes += buf.byteLength; state.lastLatency = head.lat;
    if (head.rep) state.repeated++;
    state.arrivals.push(now);
    while (state.arrivals.length && now - state.arrivals[0] > 2000) state.arrivals.shift();
    state.fps = state.arrivals.length / Math.min(2, Math.max(0.04, (now - state.arrivals[0]) / 1000 || 0.04));
    let at = 0;
    if (head.na && ctx) {
      const samples = new Float32Array(buf.slice(a0, a1));
      const b = ctx.createBuffer(1, samples.length, SR);
      b.copyToChannel(samples, 0);
      const src = ctx.createBufferSource();
      src.buffer = b; src.connect(ctx.destination);
      // a small jitter buffer: 80 ms behind the first frame, then back to back
      if (playhead < ctx.currentTime + 0.02) playhead = ctx.currentTime + 0.08;
      src.start(playhead); at = playhead; playhead += samples.length / SR;
    }
    pending.push({ head, bitmap, at });
    if (!raf) raf = requestAnimationFrame(tick);
    if (state.frames % 5 === 0) showStats();
  }

  async function photoBytes() {
    if ($("tf-live-example") && $("tf-live-example").checked) return null;
    const img = document.querySelector("#photo img");
    if (!img || !img.src) return null;
    const r = await fetch(img.src);
    if (!r.ok) throw new Error(`could not read the photo (${r.status})`);
    return await r.arrayBuffer();
  }

  async function start() {
    if (state.running) return;
    Object.assign(state, { running: true, frames: 0, repeated: 0, bytes: 0, lastIndex: -1, fps: 0, arrivals: [],
                           diffs: [], stats: null, messages: [], errors: [], ended: null });
    prevThumb = null; pending = []; playhead = 0;
    setButtons(true);
    const m = mode();
    try {
      ctx = new AudioContext({ sampleRate: SR });
      await ctx.resume();
      const photo = await photoBytes();
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live/ws";
      ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error("cannot connect")); });
      const text = ($("tf-live-text") || {}).value || "";
      const opts = { type: "start", mode: m, format: "f32", sample_rate: SR, photo: photo ? "upload" : "example",
                     head_motion: headMotion() };
      if (m === "text") opts.text = text;
      ws.send(JSON.stringify(opts));
      if (photo) ws.send(photo);
      status(`Connecting (${photo ? "the Photo tab's photo" : "the example photo"}) ...`);
      ws.onmessage = (ev) => {
        if (typeof ev.data !== "string") { onFrame(ev.data); return; }
        const msg = JSON.parse(ev.data);
        state.messages.push(msg);
        if (msg.type === "ready") { state.width = msg.width; state.height = msg.height; status("Live."); }
        else if (msg.type === "stats") { state.stats = msg; showStats(); }
        else if (msg.type === "busy" || msg.type === "error") { state.errors.push(msg.message); status(msg.message); }
        else if (msg.type === "end") { state.ended = msg.reason; }
      };
      ws.onclose = () => { const why = state.errors.length ? state.errors[state.errors.length - 1] : state.ended;
                           stop(false); status(`Stopped${why ? ": " + why : "."}`); };
      if (m === "audio") await startMic();
      else status("Speaking ...");
    } catch (e) {
      state.errors.push(String(e.message || e));
      status(`Could not start: ${e.message || e}`);
      stop(false);
    }
  }

  async function startMic() {
    mic = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
    await ctx.audioWorklet.addModule(url);
    URL.revokeObjectURL(url);
    const source = ctx.createMediaStreamSource(mic);
    node = new AudioWorkletNode(ctx, "tf-capture");
    let buf = new Float32Array(CHUNK), fill = 0;
    node.port.onmessage = (ev) => {
      const x = ev.data;
      for (let i = 0; i < x.length; i++) {
        buf[fill++] = x[i];
        if (fill === CHUNK) {
          if (ws && ws.readyState === WebSocket.OPEN) ws.send(buf.buffer);
          buf = new Float32Array(CHUNK); fill = 0;
        }
      }
    };
    source.connect(node);
    const mute = ctx.createGain(); mute.gain.value = 0; node.connect(mute); mute.connect(ctx.destination);
    status("Live: speak into the microphone.");
  }

  function stop(send = true) {
    if (send && ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
    ws = null;
    if (node) { node.port.onmessage = null; node.disconnect(); node = null; }
    if (mic) { mic.getTracks().forEach((t) => t.stop()); mic = null; }
    const c = ctx; ctx = null;
    if (c) setTimeout(() => c.close(), 500); // let the last frames' audio finish
    state.running = false;
    setButtons(false);
    showStats();
  }

  function say() {
    const t = ($("tf-live-text") || {}).value || "";
    if (ws && ws.readyState === WebSocket.OPEN && t.trim()) ws.send(JSON.stringify({ type: "say", text: t }));
  }

  state.start = start; state.stop = () => stop(true); state.say = say;
  document.addEventListener("click", (ev) => {
    const id = ev.target && ev.target.id;
    if (id === "tf-live-start") start();
    else if (id === "tf-live-stop") stop(true);
    else if (id === "tf-live-say") say();
  });
  document.addEventListener("change", (ev) => {
    if (ev.target && ev.target.name === "tf-live-source") setButtons(state.running);
  });
})();
