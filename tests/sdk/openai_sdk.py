"""The official openai SDK, unmodified, against a running voxgate (base URL as argv[1])."""
import io
import os
import sys
import wave

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key=os.environ["VOXGATE_TEST_KEY"], max_retries=0)

# audio.speech.create: the whole file.
response = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there. This is voxgate.", response_format="wav")
data = response.read()
with wave.open(io.BytesIO(data)) as w:
    assert w.getframerate() == 24000, w.getframerate()
    assert w.getnchannels() == 1
assert len(data) > 24000, len(data)

# with_streaming_response: chunks as they arrive.
chunks = []
with client.audio.speech.with_streaming_response.create(
    model="tts-1", voice="nova", input="One. Two. Three. Four.", response_format="mp3"
) as streamed:
    assert streamed.headers["content-type"] == "audio/mpeg"
    for chunk in streamed.iter_bytes():
        chunks.append(chunk)
mp3 = b"".join(chunks)
assert mp3[:2] == b"\xff\xf3" or mp3[:2] == b"\xff\xf2" or mp3[:3] == b"ID3", mp3[:4]

# Models through the SDK.
ids = [m.id for m in client.models.list()]
assert "tts-1" in ids, ids

# An error surfaces as the SDK's typed exception, parsed from the envelope.
try:
    client.audio.speech.create(model="tts-1", voice="alloy", input="x", speed=9)
except openai.BadRequestError as e:
    assert e.code == "invalid_value", e.body
    assert e.param == "speed", e.body
else:
    raise AssertionError("speed 9 was accepted")

# A wrong key is refused with the SDK's typed 401.
bad = openai.OpenAI(base_url=base_url, api_key="vg_wrong", max_retries=0)
try:
    bad.models.list()
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", e.body
else:
    raise AssertionError("a wrong key was accepted")

# Transcription through the SDK: the WAV the server just spoke, back to text.
spoken = client.audio.speech.create(
    model="tts-1", voice="alloy", input="Hello there. This is a test.", response_format="wav"
).read()
transcript = client.audio.transcriptions.create(
    model="whisper-1", file=("hello.wav", spoken, "audio/wav"), language="en"
)
assert "hello" in transcript.text.lower(), transcript.text
srt = client.audio.transcriptions.create(
    model="whisper-1", file=("hello.wav", spoken, "audio/wav"), response_format="srt"
)
assert " --> " in srt, srt
verbose = client.audio.transcriptions.create(
    model="whisper-1",
    file=("hello.wav", spoken, "audio/wav"),
    response_format="verbose_json",
    timestamp_granularities=["word"],
)
assert verbose.words and verbose.words[0].end >= verbose.words[0].start, verbose
try:
    client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"\x7fELF" + b"\0" * 64))
except openai.APIStatusError as e:
    assert e.status_code == 415 and e.code == "unsupported_media_type", e.body
else:
    raise AssertionError("an ELF file named .wav was accepted")

print("openai SDK: speech, streaming, models, transcription and errors ok")
