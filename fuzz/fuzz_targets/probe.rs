//! Fuzzes the upload probe: the first byte picks an allowed extension for the client
//! filename, the rest is the file. Refusals are fine; panics and aborts are not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_input::probe::{self, ALLOWED_EXTENSIONS, ProbeLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let ext = ALLOWED_EXTENSIONS[usize::from(pick) % ALLOWED_EXTENSIONS.len()];
    let filename = format!("upload.{ext}");
    // A short duration cap keeps each run fast: decoding stops once it is exceeded.
    let limits = ProbeLimits {
        max_duration_secs: 5.0,
        ..ProbeLimits::default()
    };
    if let Ok(probed) = probe::probe_bytes(file, &filename, &limits) {
        assert!(probed.duration_secs <= limits.max_duration_secs);
        assert!(probed.duration_secs >= limits.min_duration_secs);
        assert!(probed.channels >= 1 && probed.channels <= limits.max_channels);
        assert!((limits.min_sample_rate..=limits.max_sample_rate).contains(&probed.sample_rate));
        assert!(
            probed
                .samples
                .iter()
                .all(|v| v.is_finite() && (-1.0..=1.0).contains(v))
        );
    }
});
