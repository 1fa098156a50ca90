pub mod augment;
pub mod schedule;
pub mod verify;
