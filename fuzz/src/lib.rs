//! Helpers shared by the fuzz targets and the seed writer (`make-seeds`).

use object::write::Object;
use object::{Architecture, BinaryFormat, Endianness, SectionKind};

/// The cluster key the gossip targets seal and open frames with.
pub const GOSSIP_KEY: [u8; 32] = [0x42; 32];
/// The cluster name the gossip targets use as associated data.
pub const GOSSIP_CLUSTER: &str = "fuzz";

/// The architecture the host accepts plugins for (mirrors host/src/plugins/manifest.rs).
fn host_architecture() -> Architecture {
    match std::env::consts::ARCH {
        "aarch64" => Architecture::Aarch64,
        "x86" => Architecture::I386,
        "riscv64" => Architecture::Riscv64,
        _ => Architecture::X86_64,
    }
}

/// A minimal ELF shared object for this machine whose only content is a
/// `.clusterhost.manifest` section holding `manifest` (a few hundred bytes
/// of headers; no code). `object` writes relocatable files, so the type is
/// patched to `ET_DYN` afterwards.
pub fn elf_with_manifest(manifest: &[u8]) -> Vec<u8> {
    let endian = if cfg!(target_endian = "big") { Endianness::Big } else { Endianness::Little };
    let mut obj = Object::new(BinaryFormat::Elf, host_architecture(), endian);
    let section = obj.add_section(
        Vec::new(),
        clusterhost_plugin_api::manifest::MANIFEST_SECTION.as_bytes().to_vec(),
        SectionKind::ReadOnlyData,
    );
    obj.append_section_data(section, manifest, 1);
    let mut bytes = obj.write().expect("an object with one data section always writes");
    // e_type (offset 16, two bytes): ET_DYN = 3.
    let et_dyn: [u8; 2] = if cfg!(target_endian = "big") { [0, 3] } else { [3, 0] };
    bytes[16..18].copy_from_slice(&et_dyn);
    bytes
}
