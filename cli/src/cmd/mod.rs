pub mod admin;
pub mod augment;
pub mod coordinator;
pub mod schedule;
pub mod verify;
pub mod worker;
