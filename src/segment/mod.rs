//! Segment's message model: splitting a request body into messages (keeping each message's exact
//! bytes) and validating each message against the Segment Spec.

mod body;
mod message;
pub mod time;
pub mod tracking_api;

pub use body::{split_body, BodyError, BodyShape, SplitBody};
pub use message::{
    clip, validate_message, InvalidMessage, MessageLimits, MessageType, ValidMessage,
    MAX_MESSAGE_BYTES,
};
pub use time::{format_ms, message_id_of, newest_segment_time_ms, stamp_sent_at};
