//! The few Flite 2.2 C functions voxgate calls, declared by hand (see `/usr/include/flite`).

use std::ffi::{c_char, c_float, c_int, c_short, c_void};

/// `cst_voice` (cst_voice.h); only `features` is read.
#[repr(C)]
pub struct CstVoice {
    pub name: *const c_char,
    pub features: *mut CstFeatures,
    pub ffunctions: *mut CstFeatures,
}

/// `cst_features`: only ever handled by pointer.
#[repr(C)]
pub struct CstFeatures {
    _private: [u8; 0],
}

/// `cst_utterance` (cst_utterance.h); only `features` is read.
#[repr(C)]
pub struct CstUtterance {
    pub features: *mut CstFeatures,
    pub ffunctions: *mut CstFeatures,
    pub relations: *mut CstFeatures,
    pub ctx: *mut c_void,
}

/// `cst_wave` (cst_wave.h).
#[repr(C)]
pub struct CstWave {
    pub kind: *const c_char,
    pub sample_rate: c_int,
    pub num_samples: c_int,
    pub num_channels: c_int,
    pub samples: *mut c_short,
}

unsafe extern "C" {
    pub fn flite_init() -> c_int;
    pub fn register_cmu_us_slt(voxdir: *const c_char) -> *mut CstVoice;
    pub fn register_cmu_us_kal16(voxdir: *const c_char) -> *mut CstVoice;
    pub fn register_cmu_us_rms(voxdir: *const c_char) -> *mut CstVoice;
    pub fn register_cmu_us_awb(voxdir: *const c_char) -> *mut CstVoice;

    pub fn new_utterance() -> *mut CstUtterance;
    pub fn delete_utterance(u: *mut CstUtterance);
    pub fn utt_set_input_text(u: *mut CstUtterance, text: *const c_char) -> c_int;
    pub fn utt_init(u: *mut CstUtterance, vox: *mut CstVoice) -> *mut CstUtterance;
    pub fn utt_synth(u: *mut CstUtterance) -> *mut CstUtterance;
    pub fn utt_wave(u: *mut CstUtterance) -> *mut CstWave;
    pub fn feat_set_float(f: *mut CstFeatures, name: *const c_char, v: c_float);
    pub fn get_param_float(f: *const CstFeatures, name: *const c_char, def: c_float) -> c_float;
}
