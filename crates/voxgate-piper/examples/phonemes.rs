//! Prints, for each sentence of standard input, Piper's phoneme string and ids.
//!
//! `cargo run --example phonemes -- models/piper-joe/en_US-joe-medium.onnx.json < text.txt`

use voxgate_engine::sentences;
use voxgate_piper::{CommandPhonemizer, VoiceConfig, sentence_phonemes};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config_path = std::env::args()
        .nth(1)
        .ok_or("usage: phonemes CONFIG.onnx.json")?;
    let config = VoiceConfig::from_json(&std::fs::read(config_path)?)?;
    let text = std::io::read_to_string(std::io::stdin())?;
    let espeak = CommandPhonemizer::default();
    for sentence in sentences::split(&text) {
        let phonemes = sentence_phonemes(&sentence, &config.espeak_voice, &espeak)?;
        let (ids, missing) = config.ids.ids(&phonemes);
        #[allow(clippy::print_stdout, reason = "a command-line tool")]
        {
            println!("{sentence}\t{phonemes}\t{ids:?}\t{missing}");
        }
    }
    Ok(())
}
