//! Wire compatibility between releases: a coordinator and workers of version N and N−1 serve one
//! run side by side during a rolling upgrade, so the protocol may only grow. Every line of
//! `compat/v<release>.txt` (a message's field: number, name, type, label, type name; an enum
//! value; a service method with its request and response) must still be in today's
//! `acufarm.proto`; new fields, values and methods are fine. A release adds its own file with
//! `ACUFARM_WRITE_PROTO_BASELINE=v<version> cargo test -p acufarm-proto --test compat`.

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use std::collections::BTreeSet;
use std::path::Path;

fn current() -> BTreeSet<String> {
    let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/acufarm.fds"));
    let set = FileDescriptorSet::decode(&bytes[..]).expect("the descriptors build.rs wrote");
    let mut lines = BTreeSet::new();
    for file in &set.file {
        let package = file.package();
        for message in &file.message_type {
            describe_message(&format!("{package}.{}", message.name()), message, &mut lines);
        }
        for e in &file.enum_type {
            for v in &e.value {
                lines.insert(format!("enum {package}.{} {} = {}", e.name(), v.name(), v.number()));
            }
        }
        for service in &file.service {
            for m in &service.method {
                lines.insert(format!(
                    "rpc {package}.{}.{}({}{}) returns ({}{})",
                    service.name(),
                    m.name(),
                    if m.client_streaming() { "stream " } else { "" },
                    m.input_type(),
                    if m.server_streaming() { "stream " } else { "" },
                    m.output_type()
                ));
            }
        }
    }
    lines
}

fn describe_message(name: &str, message: &DescriptorProto, lines: &mut BTreeSet<String>) {
    for f in &message.field {
        lines.insert(format!(
            "field {name} {} = {} {:?} {:?}{}{}",
            f.name(),
            f.number(),
            f.label(),
            f.r#type(),
            if f.type_name().is_empty() { String::new() } else { format!(" {}", f.type_name()) },
            if f.proto3_optional() { " optional" } else { "" }
        ));
    }
    for nested in &message.nested_type {
        describe_message(&format!("{name}.{}", nested.name()), nested, lines);
    }
    for e in &message.enum_type {
        for v in &e.value {
            lines.insert(format!("enum {name}.{} {} = {}", e.name(), v.name(), v.number()));
        }
    }
}

#[test]
fn the_protocol_only_grows_from_every_release() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat");
    let now = current();
    if let Ok(version) = std::env::var("ACUFARM_WRITE_PROTO_BASELINE") {
        let text: String = now.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join(format!("{version}.txt")), text).unwrap();
    }
    let mut baselines = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let gone: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !now.contains(*l)).collect();
        assert!(
            gone.is_empty(),
            "acufarm.proto breaks {} (a coordinator or worker of that release could no longer talk to this one): {gone:#?}; \
             add new fields with new numbers instead of changing or removing old ones",
            path.display()
        );
        baselines += 1;
    }
    assert!(baselines > 0, "no baseline in {}", dir.display());
    assert!(now.len() > 50, "the descriptors describe the protocol: {now:?}");
}

#[test]
fn a_removed_or_renumbered_field_is_caught() {
    let now = current();
    let field = now.iter().find(|l| l.starts_with("field ")).expect("a field").clone();
    let renumbered = field.replacen(" = ", " = 9", 1);
    assert!(!now.contains(&renumbered), "the listing tells field numbers apart: {renumbered}");
}
