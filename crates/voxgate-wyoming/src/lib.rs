//! The Wyoming protocol (Home Assistant's speech protocol) as the `wyoming` reference
//! implementation 1.10 speaks it, for voxgate's Wyoming listener: bounded framing
//! ([`frame`]), the events voxgate understands ([`event`]) and the PCM conversion of what
//! clients send ([`pcm`]).
//!
//! Everything here is pure (no I/O, no clock) so it can be fuzzed and property-tested
//! alone; the listener in the gateway reads bytes, hands them to [`frame::decode`] and
//! writes what [`frame::encode`] returns.

pub mod event;
pub mod frame;
pub mod pcm;

pub use event::{AudioFormat, Event, EventError, Voice};
pub use frame::{Frame, FrameError, Limits};

/// The protocol version voxgate writes in every header (the reference's release it follows).
pub const PROTOCOL_VERSION: &str = "1.10.2";
