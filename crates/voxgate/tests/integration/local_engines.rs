//! Local engines beyond Flite, through the HTTP API: espeak-ng and festival run as sandboxed
//! subprocesses (the sandbox itself is proven in `voxgate-sandbox`'s tests).

use serde_json::json;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn sandboxed_espeak_and_festival_speak_through_the_api() {
    let app = spawn_app_with(
        r#"
[engines.espeak]
kind = "subprocess"
program = "espeak-ng"
voices = { alloy = "en-us" }
[engines.festival]
kind = "subprocess"
program = "festival"
voices = { alloy = "default" }
[models.espeak]
engine = "espeak"
[models.festival]
engine = "festival"
"#,
    )
    .await;
    for model in ["espeak", "festival"] {
        let response = app
            .speech(json!({"model": model, "input": "Hello from a sandbox. $(id); rm -rf /", "voice": "alloy", "response_format": "wav"}))
            .await;
        assert_eq!(response.status(), 200, "{model}");
        assert_eq!(
            response.headers()["x-voxgate-engine"]
                .to_str()
                .expect("header"),
            model
        );
        let wav = response.bytes().await.expect("body");
        // Streamed WAV has placeholder sizes: check the header by hand and count the
        // samples after its 44 bytes.
        assert_eq!((&wav[..4], &wav[8..16]), (&b"RIFF"[..], &b"WAVEfmt "[..]));
        let rate = u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]);
        assert_eq!(rate, 24_000);
        let seconds = (wav.len() - 44) as f64 / 48_000.0;
        assert!(seconds > 1.0, "{model}: {seconds} s");
        let loud = wav[44..]
            .chunks_exact(2)
            .filter(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs() > 1000)
            .count();
        assert!(loud > 2000, "{model}: audible speech, {loud} loud samples");
    }
    let voices: serde_json::Value = app.voices().await;
    assert!(
        voices["voices"]
            .as_array()
            .expect("voices")
            .iter()
            .any(|v| v["id"] == "en-us"),
        "{voices}"
    );
}
