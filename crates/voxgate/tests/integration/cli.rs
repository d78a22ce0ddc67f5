//! The `voxgate` binary's commands, run as a user would.

use std::process::Command;

use crate::decode::decode;

fn voxgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxgate"));
    // Run from a scratch directory with no VOXGATE_* surprises from the caller.
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    cmd
}

#[test]
fn version_and_default_config() {
    let out = voxgate().arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("voxgate "));

    let out = voxgate()
        .args(["config", "print-default"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text, voxgate::config::DEFAULT_TOML);
    assert!(voxgate::config::Config::from_toml(&text).is_ok());
}

#[test]
fn config_check_names_a_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nbind = \"127.0.0.1:9000\"\n").expect("write");
    let out = voxgate()
        .arg("--config")
        .arg(&good)
        .args(["config", "check"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[speech]\nmax_input_chars = 0\n").expect("write");
    let out = voxgate()
        .arg("--config")
        .arg(&bad)
        .args(["config", "check"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("speech.max_input_chars"));

    let out = voxgate()
        .env("VOXGATE_SERVER__BINDD", "x")
        .args(["config", "check"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bindd"));
}

#[test]
fn say_writes_decodable_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("out.wav");
    let out = voxgate()
        .args([
            "say",
            "Hello from the command line. Two sentences.",
            "--voice",
            "nova",
            "-o",
        ])
        .arg(&wav)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    decode("wav", &std::fs::read(&wav).expect("read")).assert_speech(1.5, 6.0);

    let out = voxgate()
        .args(["say", "Nope.", "--format", "ogg", "-o"])
        .arg(dir.path().join("x.ogg"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "unknown formats are refused");
}

#[test]
fn voices_lists_aliases_and_native_voices() {
    let out = voxgate().arg("voices").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for voice in ["alloy", "kal16", "awb"] {
        assert!(
            text.lines().any(|l| l.starts_with(voice)),
            "{voice} missing:\n{text}"
        );
    }
}

/// The README's quick start in the order most people try it: the server runs, then keys are
/// created from a second terminal on the same data directory. The commands leave the live
/// server's temporary files alone, so its uploads (transcriptions, voice samples) still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_beside_a_live_server() {
    let app = crate::helpers::spawn_app().await;
    let data_dir = app.state.config.data_dir.clone();
    let run = |args: &[&str]| {
        let out = voxgate()
            .env("VOXGATE_DATA_DIR", &data_dir)
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let account = run(&[
        "accounts",
        "create",
        "--name",
        "second terminal",
        "--tier",
        "premium",
    ]);
    let key = run(&["keys", "create", "--account", &account]);
    run(&["keys", "list", "--account", &account]);
    run(&["audit", "verify"]);
    assert!(app.state.uploads.path().is_dir(), "the spool survived");

    let client = crate::helpers::client_with(Some(&key));
    let transcription = client
        .post(app.url("/v1/audio/transcriptions"))
        .multipart(
            reqwest::multipart::Form::new()
                .text("model", "whisper-1")
                .part(
                    "file",
                    crate::helpers::file_part(crate::helpers::tone_wav(2.0, 16_000), "a.wav"),
                ),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(
        transcription.status(),
        200,
        "{:?}",
        transcription.text().await
    );
    let voice = client
        .post(app.url("/v1/audio/voices"))
        .multipart(
            reqwest::multipart::Form::new()
                .text("name", "Mine")
                .text("consent", "true")
                .part(
                    "audio_sample",
                    crate::helpers::file_part(crate::helpers::tone_wav(6.0, 22_050), "v.wav"),
                ),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(voice.status(), 200, "{:?}", voice.text().await);
}
