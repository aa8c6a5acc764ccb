"""Generated test media with known truth, for tests, benchmarks and ``classpulse demo``/``simulate``.

Nothing is downloaded and nothing large is committed: faces are real photos shipped in wheels,
speech is Debian's espeak-ng, clips are encoded with PyAV.

- :mod:`~shared.testkit.photos`   the photos (matplotlib's Grace Hopper; scikit-image's astronaut, camera)
- :mod:`~shared.testkit.frames`   placing and turning a face in a frame, backgrounds, the sample class's frames
- :mod:`~shared.testkit.speech`   espeak-ng speech, trimming, noise, speech scenes, the sample class's soundtrack
- :mod:`~shared.testkit.messages` ``VideoFrame``/``AudioChunk`` messages from images and waveforms
- :mod:`~shared.testkit.script`   the sample class's script, its per-second truth and agreement with a timeline
- :mod:`~shared.testkit.clips`    encoded clips: the sample class, the ``simulate`` clip, cut-short copies
- :mod:`~shared.testkit.recorded_class` a generated class: one recording per participant (scripts, photos, starts),
  a manifest, and the truth on class time
- :mod:`~shared.testkit.gallery`  a generated gallery-view recording: tiles of real photos, mixed espeak-ng speech
  with the speaker's mouth moving, tile boxes and the truth
- :mod:`~shared.testkit.classroom` a class of students as live media fed to a media bus (scale-out tests, bench)
- :mod:`~shared.testkit.features` fusion-model input windows in realistic ranges (no media)

Import the module you need; the package itself imports nothing.
"""
