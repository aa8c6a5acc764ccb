// A WHIP publisher on Google's libwebrtc (Node @roamhq/wrtc): one camera frame (raw I420) and mono
// 48 kHz s16le audio, looped for SECONDS, then DELETE on the resource. Prints one JSON line and exits 0
// when the peer connection reached "connected"; exits 1 with one readable line otherwise.
//   WHIP_TOKEN=... node publish.mjs URL FRAME.i420 WIDTH HEIGHT AUDIO.s16 SECONDS
import wrtc from "@roamhq/wrtc";

const { RTCPeerConnection, nonstandard } = wrtc;
const [url, framePath, width, height, audioPath, seconds] = process.argv.slice(2);
const { readFileSync } = await import("node:fs");
const fail = (why) => { console.error(`wrtc publisher: ${why}`); process.exit(1); };
if (!url || !seconds) fail("usage: WHIP_TOKEN=... node publish.mjs URL FRAME.i420 WIDTH HEIGHT AUDIO.s16 SECONDS");

const frame = { width: Number(width), height: Number(height), data: new Uint8ClampedArray(readFileSync(framePath)) };
const pcm = readFileSync(audioPath);
const audio = new Int16Array(pcm.buffer, pcm.byteOffset, Math.floor(pcm.length / 2));
const video = new nonstandard.RTCVideoSource();
const sound = new nonstandard.RTCAudioSource();
const pc = new RTCPeerConnection({ iceServers: [] });
for (const track of [video.createTrack(), sound.createTrack()]) pc.addTransceiver(track, { direction: "sendonly" });

await pc.setLocalDescription(await pc.createOffer());
await new Promise((done) => {  // WHIP without trickle: the offer carries every candidate
  if (pc.iceGatheringState === "complete") done();
  pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
});
const auth = { Authorization: `Bearer ${process.env.WHIP_TOKEN ?? ""}` };
const answer = await fetch(url, { method: "POST", headers: { ...auth, "Content-Type": "application/sdp" },
  body: pc.localDescription.sdp }).catch((e) => fail(`cannot reach ${url} (${e.message})`));
if (answer.status !== 201) fail(`WHIP POST answered ${answer.status}: ${(await answer.text()).trim()}`);
const location = new URL(answer.headers.get("location"), url);
await pc.setRemoteDescription({ type: "answer", sdp: await answer.text() });

let frames = 0, chunks = 0, offset = 0;
const started = Date.now();
const timer = setInterval(() => {  // audio in 10 ms chunks (libwebrtc's), video at 10 fps; catches up when late
  const elapsed = Date.now() - started;
  for (; chunks < Math.floor(elapsed / 10); chunks++) {
    const samples = new Int16Array(480);
    for (let i = 0; i < 480; i++, offset = (offset + 1) % audio.length) samples[i] = audio[offset];
    sound.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 });
  }
  if (frames < Math.floor(elapsed / 100)) { video.onFrame(frame); frames++; }
}, 10);
const connected = await new Promise((done) => {
  const check = () => ["connected", "failed", "closed"].includes(pc.connectionState) && done(pc.connectionState);
  pc.onconnectionstatechange = check; check(); setTimeout(() => done(pc.connectionState), 15000);
});
if (connected === "connected") await new Promise((done) => setTimeout(done, Number(seconds) * 1000));
clearInterval(timer);
await fetch(location, { method: "DELETE", headers: auth }).catch(() => {});
pc.close();
console.log(JSON.stringify({ state: connected, frames, chunks, seconds: (Date.now() - started) / 1000 }));
process.exit(connected === "connected" ? 0 : 1);
