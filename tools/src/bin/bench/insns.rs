//! What the verifier made of each program: its translated (xlated) and JIT sizes, and the
//! helper calls left in the translated code, named through `/proc/kallsyms`.
//!
//! The kernel rewrites some calls before the JIT: array and per-CPU array lookups become a
//! few inline instructions, a hash lookup a direct call to the map's lookup function. The
//! translated dump shows what runs, so the helper calls are counted there, not in the object.
//! Which of them each benchmarked path reaches is the static table [`PATH_HELPERS`], read off
//! `collector-ebpf/src/main.rs`; [`check_table`] holds it against the dump, so a helper call
//! added to the programs without the table being updated fails the benchmark.
use std::{collections::BTreeMap, os::fd::AsFd as _, os::fd::AsRawFd as _};

use anyhow::{bail, Context, Result};
use aya::programs::ProgramInfo;

/// The start of the kernel's `struct bpf_prog_info` (uapi/linux/bpf.h), as far as the
/// instruction dumps. A shorter struct is allowed: the kernel copies what fits.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_JMP | BPF_CALL`.
const OP_CALL: u8 = 0x85;
/// `src_reg` of a call to another function of the program (not a helper).
const PSEUDO_CALL: u8 = 1;
/// `src_reg` of a kfunc call.
const PSEUDO_KFUNC_CALL: u8 = 2;

/// Sizes and helper calls of one loaded program.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProgSize {
    pub program: String,
    /// Instructions after the verifier's rewrites (8 bytes each; a 64-bit immediate load
    /// counts twice, as the kernel stores it).
    pub xlated_insns: u32,
    /// Bytes of machine code after JIT.
    pub jited_bytes: u32,
    /// Instructions the verifier walked (over all paths), when the kernel reports it.
    pub verified_insns: Option<u32>,
    /// Helper call sites by kernel symbol (`helper@offset` when the kernel hides addresses).
    pub helper_sites: BTreeMap<String, usize>,
    /// Calls to the program's own functions (bpf-to-bpf).
    pub subprog_sites: usize,
}

impl ProgSize {
    /// Helper call sites in all.
    pub fn helper_total(&self) -> usize {
        self.helper_sites.values().sum()
    }
}

fn get_info(fd: i32, head: &mut ProgInfoHead) -> Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of::<ProgInfoHead>() as u32,
        info: head as *mut ProgInfoHead as u64,
    };
    // SAFETY: `attr` and the buffers it points to (the head, and the instruction buffer the
    // head may point to, sized by its length field) live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        bail!(
            "BPF_OBJ_GET_INFO_BY_FD: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Kernel text symbols by address, for naming helper calls.
fn kallsyms() -> Result<(u64, BTreeMap<u64, String>)> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let mut base = 0;
    let mut syms = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if name == "__bpf_call_base" {
            base = addr;
        }
        syms.entry(addr).or_insert_with(|| name.to_owned());
    }
    Ok((base, syms))
}

/// Reads the translated program behind `info` and counts its calls.
pub fn program_size(name: &str, info: &ProgramInfo) -> Result<ProgSize> {
    let fd = info.fd().with_context(|| format!("{name}: program fd"))?;
    let raw = fd.as_fd().as_raw_fd();
    let mut head = ProgInfoHead::default();
    get_info(raw, &mut head)?;
    let n = head.xlated_prog_len as usize / 8;
    let mut insns = vec![0u64; n];
    let mut head2 = ProgInfoHead {
        xlated_prog_len: head.xlated_prog_len,
        xlated_prog_insns: insns.as_mut_ptr() as u64,
        ..ProgInfoHead::default()
    };
    get_info(raw, &mut head2)?;
    let (base, syms) = kallsyms()?;
    let mut helper_sites = BTreeMap::new();
    let mut subprog_sites = 0;
    for (i, insn) in insns.iter().enumerate() {
        // struct bpf_insn: code (u8), dst_reg:4 src_reg:4 (u8), off (i16), imm (i32).
        let b = insn.to_le_bytes();
        if b[0] != OP_CALL {
            continue;
        }
        let src = b[1] >> 4;
        let imm = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match src {
            PSEUDO_CALL => subprog_sites += 1,
            PSEUDO_KFUNC_CALL => *helper_sites.entry("kfunc".to_owned()).or_insert(0) += 1,
            _ => {
                // The kernel stores a helper call as its address minus __bpf_call_base, and
                // zeroes it for a reader not allowed to see kernel addresses.
                let addr = base.wrapping_add_signed(i64::from(imm));
                let sym = match syms.get(&addr) {
                    Some(s) if imm != 0 && base != 0 => s.clone(),
                    _ => format!("helper@{i}"),
                };
                *helper_sites.entry(sym).or_insert(0) += 1;
            }
        }
    }
    Ok(ProgSize {
        program: name.to_owned(),
        xlated_insns: n as u32,
        jited_bytes: head2.jited_prog_len.max(info.size_jitted()),
        verified_insns: info.verified_instruction_count(),
        helper_sites,
        subprog_sites,
    })
}

/// Helper calls a path makes, by kernel symbol, in the order it makes them; `prefix`
/// matches the bench's scenario names. Read off `collector-ebpf/src/main.rs`:
/// - no-match: the shortcut (`plain_udp4_ports`) and the bitmaps, all inline.
/// - SIP copy: `copy` loads the packet, stamps it, asks the ring's backlog and writes the
///   record. `remember_pair` looks both addresses up in SIP_HOSTS (an LRU hash: two calls)
///   only when the pair differs from this CPU's last one or that is a second old: not on
///   the benchmark's steady path, which repeats one pair.
/// - RTP hit: the MEDIA lookup (a hash: a call) and the arrival time.
///
/// COUNTERS, WORK, SCRATCH, SIP_PORTS and MEDIA_PORTS are arrays: their lookups are inlined.
pub const PATH_HELPERS: &[(&str, &str, &[&str])] = &[
    ("no-match", "sip_xdp", &[]),
    ("no-match", "sip_tc_egress", &[]),
    (
        "SIP copy",
        "sip_xdp",
        &[
            "bpf_xdp_load_bytes",
            "bpf_ktime_get_ns",
            "bpf_ringbuf_query",
            "bpf_ringbuf_output",
        ],
    ),
    (
        "SIP copy",
        "sip_tc_egress",
        &[
            "bpf_skb_load_bytes",
            "bpf_ktime_get_ns",
            "bpf_ringbuf_query",
            "bpf_ringbuf_output",
        ],
    ),
    (
        "RTP hit",
        "sip_xdp",
        &["__htab_map_lookup_elem", "bpf_ktime_get_ns"],
    ),
    (
        "RTP hit",
        "sip_tc_egress",
        &["__htab_map_lookup_elem", "bpf_ktime_get_ns"],
    ),
];

/// Helpers reached only on paths the benchmark does not measure: a new SIP host's insert
/// (`bpf_map_update_elem` rewritten to the LRU's update), endpoint and pending-entry lookups
/// (hash lookups, as above).
const UNMEASURED_HELPERS: &[&str] = &["htab_lru_map_update_elem"];

/// The helper calls of the path `scenario` of `program`, per [`PATH_HELPERS`].
pub fn path_helpers(program: &str, scenario: &str) -> Option<&'static [&'static str]> {
    PATH_HELPERS
        .iter()
        .find(|(prefix, prog, _)| *prog == program && scenario.starts_with(prefix))
        .map(|(_, _, h)| *h)
}

/// Holds [`PATH_HELPERS`] against the translated program: every helper a path names is
/// called somewhere in it, and it calls no helper that neither a path nor
/// [`UNMEASURED_HELPERS`] names. Addresses hidden by the kernel skip the naming check.
pub fn check_table(size: &ProgSize) -> Result<()> {
    if size.helper_sites.keys().any(|k| k.starts_with("helper@")) {
        eprintln!(
            "bench: {}: helper addresses hidden by the kernel; the path table is not checked",
            size.program
        );
        return Ok(());
    }
    let named: Vec<&str> = PATH_HELPERS
        .iter()
        .filter(|(_, prog, _)| *prog == size.program)
        .flat_map(|(_, _, h)| h.iter().copied())
        .chain(UNMEASURED_HELPERS.iter().copied())
        .collect();
    for h in &named {
        if UNMEASURED_HELPERS.contains(h) {
            continue;
        }
        if !size.helper_sites.contains_key(*h) {
            bail!(
                "{}: the path table names {h}, which the translated program never calls",
                size.program
            );
        }
    }
    for h in size.helper_sites.keys() {
        if !named.contains(&h.as_str()) {
            bail!(
                "{}: the translated program calls {h}, which no path in the table names: update PATH_HELPERS",
                size.program
            );
        }
    }
    Ok(())
}
