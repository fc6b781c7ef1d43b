//! micro-vmm: a small KVM virtual machine monitor built on the rust-vmm crates.
//!
//! Layers, from the outside in: [`api`] turns user input into a validated [`api::VmConfig`];
//! [`vmm::builder`] builds the VM from it in one fixed order; [`vmm::Vmm::run`] runs it until
//! it ends with a [`vmm::exit::VmExit`]. [`boot`] prepares guest memory and vCPU state,
//! [`devices`] emulates what the guest talks to.

pub mod agent;
pub mod api;
pub mod app;
pub mod boot;
pub mod devices;
pub mod disk;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod guest_text;
pub mod lifecycle;
pub mod lines;
pub mod log_limit;
pub mod manager;
pub mod payload;
pub mod poll;
pub mod sandbox;
pub mod unix_socket;
pub mod vmm;
