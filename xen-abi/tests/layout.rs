//! Checks xen-abi against Xen's public headers as Debian's `libxen-dev` installs them
//! (`/usr/include/xen`, Xen 4.17), compiled as C by the system C compiler.
//!
//! Each table below is written once and drives both sides: the C program this test generates
//! prints `sizeof`, `offsetof` and member `sizeof`s of every listed struct and the value of every
//! listed constant; the Rust side evaluates `size_of`, `offset_of!` and the constant. Nothing is
//! typed in twice, so changing one offset or value in `src/` makes the test fail, and every
//! mismatch is reported at once.
//!
//! ```text
//!  tables (C name, Rust item) ──► layout.c ──cc──► ./layout ──► "f 3 2 48 4" ──┐
//!          │                                                                     ├─► compare
//!          └────────────────► size_of / offset_of! / constant value ────────────┘
//! ```
//!
//! * Struct tables also destructure the Rust struct without `..`, so a Rust field that is neither
//!   compared nor declared as Rust-only padding (`pad { _pad0 }`) does not compile. C unions and
//!   anonymous members map to the flattened Rust field (`console.domU.mfn` → `console_mfn`,
//!   `arg1.mfn` → `arg1`); padding that exists only in Rust is checked through the struct size.
//! * For the constant families the crate mirrors (`__HYPERVISOR_*`, `SCHEDOP_*`, `XENFEAT_*`, …)
//!   every macro the headers define must appear in the table: a new or forgotten one fails.
//! * `errno.h` is an X-macro list, so the errno check runs both ways as well.
//!
//! Not in the public 4.17 headers, so not checked here: `xen::START_INFO_MAGIC_X86_64`,
//! `xen::XEN_MSR_PAT`, `hypercall::NR_HYPERCALLS`, `hypercall::HYPERCALL_STUB_SIZE`,
//! `memory::MEMOP_CMD_MASK` (Xen-private); `memory::E820_ENTRY_SIZE`, `memory::E820_RAM` (Xen-internal
//! `e820entry`); `event::EVTCHNOP_RESET_CONT` (`#ifdef __XEN__`);
//! `elfnote::XEN_ELFNOTE_PHYS32_RELOC`, `version::XENFEAT_RUNSTATE_PHYS_AREA`,
//! `version::XENFEAT_VCPU_TIME_PHYS_AREA`, `physdev::PHYSDEVOP_PCI_DEVICE_RESET` (newer Xen);
//! `elfnote::XEN_ELFNOTE_NAME`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use xen_abi::callback::{CallbackRegister, CallbackUnregister};
use xen_abi::event::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnReset, EvtchnSend, EvtchnSetPriority,
    EvtchnStatus, EvtchnUnmask,
};
use xen_abi::grant_table::{
    GnttabCacheFlush, GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabGetVersion, GnttabMapGrantRef,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabSwapGrantRef, GnttabTransfer,
    GnttabUnmapAndReplace, GnttabUnmapGrantRef, GrantEntryV1,
};
use xen_abi::io::blkif::{
    self, BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
};
use xen_abi::io::console::XenconsInterface;
use xen_abi::io::ring::{self, SringHeader};
use xen_abi::io::xs_wire::{self, XenstoreDomainInterface, XsdSockmsg};
use xen_abi::memory::{
    XenAddToPhysmap, XenAddToPhysmapBatch, XenMachphysMapping, XenMachphysMfnList, XenMemAcquireResource,
    XenMemoryMap, XenMemoryReservation, XenPodTarget, XenRemoveFromPhysmap, XenVnumaTopologyInfo,
};
use xen_abi::physdev::{
    PhysdevEoi, PhysdevIrqStatusQuery, PhysdevPirqEoiGmfn, PhysdevSetIobitmap, PhysdevSetIopl, XennmiCallback,
};
use xen_abi::sched::{SchedPinOverride, SchedPoll, SchedRemoteShutdown, SchedShutdown, SchedWatchdog};
use xen_abi::vcpu::{
    VcpuGetPhysid, VcpuRegisterRunstateMemoryArea, VcpuRegisterTimeMemoryArea, VcpuRegisterVcpuInfo,
    VcpuRunstateInfo, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer,
};
use xen_abi::version::{XenCompileInfo, XenFeatureInfo, XenPlatformParameters};
use xen_abi::xen::{
    ArchSharedInfo, ArchVcpuInfo, IretContext, MmuUpdate, MmuextOp, MulticallEntry, SharedInfo, StartInfo,
    TrapInfo, VcpuInfo, VcpuTimeInfo,
};
use xen_abi::Errno;
use xen_abi::{
    callback, console, elfnote, event, grant_table, hypercall, memory, physdev, sched, vcpu, version, xen,
};

const SETUP_HINT: &str = "install libxen-dev: run scripts/setup";

/// The interface version Xen 4.17's tools are built with (`__XEN_LATEST_INTERFACE_VERSION__`).
/// Without it the headers fall back to the 0x00000000 legacy interface, which differs (e.g.
/// `vcpu_time_info` has no `flags`, `CALLBACKTYPE_sysenter` is 3).
const XEN_INTERFACE_VERSION: &str = "0x00040e00";

const HEADERS: &[&str] = &[
    "xen/xen.h",
    "xen/sched.h",
    "xen/version.h",
    "xen/features.h",
    "xen/vcpu.h",
    "xen/callback.h",
    "xen/memory.h",
    "xen/event_channel.h",
    "xen/physdev.h",
    "xen/grant_table.h",
    "xen/nmi.h",
    "xen/elfnote.h",
    "xen/errno.h",
    "xen/io/blkif.h",
    "xen/io/console.h",
    "xen/io/ring.h",
    "xen/io/xs_wire.h",
];

/// Macro families the crate mirrors completely: every header macro with one of these prefixes
/// must appear in [`constants`].
const MIRRORED_FAMILIES: &[&str] = &[
    "__HYPERVISOR_",
    "SCHEDOP_",
    "SHUTDOWN_",
    "XENVER_",
    "XENFEAT_",
    "XEN_ELFNOTE_",
    "CONSOLEIO_",
    "SIF_",
    "MMU_",
    "MMUEXT_",
    "UVMF_",
    "VMASST_",
    "SEGBASE_",
    "CALLBACKOP_",
    "CALLBACKTYPE_",
    "CALLBACKF_",
    "EVTCHNOP_",
    "VIRQ_",
    "VCPUOP_",
    "RUNSTATE_",
    "XENMEM_",
    "DOMID_",
    "FLAT_",
    "VGCF_",
    "FIRST_RESERVED_GDT_",
    "XEN_PVCLOCK_",
    "PHYSDEVOP_",
    "XENIRQSTAT_",
    "XENNMI_",
    "GNTTABOP_",
    "GTF_",
    "GNTST_",
    "GNTMAP_",
    "GNTCOPY_",
    "GNTTAB_",
    "XENSTORE_",
    "BLKIF_",
    "VDISK_",
];

/// Members of a mirrored family that xen-abi deliberately leaves out, by prefix.
const NOT_MIRRORED: &[(&str, &str)] = &[
    ("XENMEM_resource_", "XENMEM_acquire_resource types: toolstack/device-model only"),
    ("PHYSDEVOP_DBGP_", "PHYSDEVOP_dbgp_op arguments: hardware domain only"),
    ("GNTTABOP_error_msgs", "a table of message strings, not a number"),
];

struct Field {
    c_path: &'static str,
    rust: &'static str,
    offset: usize,
    size: usize,
}

struct Layout {
    c_type: &'static str,
    rust: &'static str,
    size: usize,
    fields: Vec<Field>,
}

struct Const {
    c_expr: &'static str,
    rust: &'static str,
    value: u64,
}

/// The size of the field `f` selects, without a value of `T`.
fn field_size<T, F>(_f: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// A constant as the C program prints it: converted to `unsigned long long`, two's complement
/// for negative values.
fn c_value<T: TryInto<i128>>(v: T) -> u64
where
    T::Error: std::fmt::Debug,
{
    v.try_into().expect("integer constant") as u64
}

/// `layout!(RustType = "C type" { rust_field: "c.path" | "other.c.path", ... } pad { _pad0 })`
macro_rules! layout {
    ($rust:ident = $c:literal {
        $($field:ident : $($c_path:literal)|+),* $(,)?
    } $(pad { $($pad:ident),* $(,)? })?) => {{
        // Does not compile when the Rust struct gains a field this table does not list.
        #[allow(dead_code)]
        fn every_rust_field_is_listed(v: $rust) {
            let $rust { $($field: _,)* $($($pad: _,)*)? } = v;
        }
        Layout {
            c_type: $c,
            rust: stringify!($rust),
            size: size_of::<$rust>(),
            fields: vec![$($(Field {
                c_path: $c_path,
                rust: stringify!($field),
                offset: offset_of!($rust, $field),
                size: field_size::<$rust, _>(|s| &s.$field),
            }),+),*],
        }
    }};
}

/// `consts! { "C expression" => rust::CONSTANT, ... }`
macro_rules! consts {
    ($($c:literal => $rust:expr),* $(,)?) => {
        vec![$(Const { c_expr: $c, rust: stringify!($rust), value: c_value($rust) }),*]
    };
}

fn layouts() -> Vec<Layout> {
    vec![
        layout!(StartInfo = "struct start_info" {
            magic: "magic",
            nr_pages: "nr_pages",
            shared_info: "shared_info",
            flags: "flags",
            store_mfn: "store_mfn",
            store_evtchn: "store_evtchn",
            console_mfn: "console.domU.mfn",
            console_evtchn: "console.domU.evtchn",
            pt_base: "pt_base",
            nr_pt_frames: "nr_pt_frames",
            mfn_list: "mfn_list",
            mod_start: "mod_start",
            mod_len: "mod_len",
            cmd_line: "cmd_line",
            first_p2m_pfn: "first_p2m_pfn",
            nr_p2m_frames: "nr_p2m_frames",
        } pad { _pad0, _pad1, _pad2 }),
        layout!(SharedInfo = "struct shared_info" {
            vcpu_info: "vcpu_info",
            evtchn_pending: "evtchn_pending",
            evtchn_mask: "evtchn_mask",
            wc_version: "wc_version",
            wc_sec: "wc_sec",
            wc_nsec: "wc_nsec",
            wc_sec_hi: "wc_sec_hi",
            arch: "arch",
        }),
        layout!(ArchSharedInfo = "struct arch_shared_info" {
            max_pfn: "max_pfn",
            pfn_to_mfn_frame_list_list: "pfn_to_mfn_frame_list_list",
            nmi_reason: "nmi_reason",
            p2m_cr3: "p2m_cr3",
            p2m_vaddr: "p2m_vaddr",
            p2m_generation: "p2m_generation",
        }),
        layout!(VcpuInfo = "struct vcpu_info" {
            evtchn_upcall_pending: "evtchn_upcall_pending",
            evtchn_upcall_mask: "evtchn_upcall_mask",
            evtchn_pending_sel: "evtchn_pending_sel",
            arch: "arch",
            time: "time",
        } pad { _pad0 }),
        layout!(ArchVcpuInfo = "struct arch_vcpu_info" {
            cr2: "cr2",
            pad: "pad",
        }),
        layout!(VcpuTimeInfo = "struct vcpu_time_info" {
            version: "version",
            pad0: "pad0",
            tsc_timestamp: "tsc_timestamp",
            system_time: "system_time",
            tsc_to_system_mul: "tsc_to_system_mul",
            tsc_shift: "tsc_shift",
            flags: "flags",
            pad1: "pad1",
        }),
        layout!(TrapInfo = "struct trap_info" {
            vector: "vector",
            flags: "flags",
            cs: "cs",
            address: "address",
        } pad { _pad }),
        layout!(MmuUpdate = "struct mmu_update" {
            ptr: "ptr",
            val: "val",
        }),
        // `arg2.nr_ents` is the low half of `arg2`: same offset, but 4 bytes instead of 8.
        layout!(MmuextOp = "struct mmuext_op" {
            cmd: "cmd",
            arg1: "arg1.mfn" | "arg1.linear_addr",
            arg2: "arg2.vcpumask" | "arg2.src_mfn",
        } pad { _pad }),
        layout!(MulticallEntry = "struct multicall_entry" {
            op: "op",
            result: "result",
            args: "args",
        }),
        layout!(IretContext = "struct iret_context" {
            rax: "rax",
            r11: "r11",
            rcx: "rcx",
            flags: "flags",
            rip: "rip",
            cs: "cs",
            rflags: "rflags",
            rsp: "rsp",
            ss: "ss",
        }),
        layout!(SchedShutdown = "struct sched_shutdown" {
            reason: "reason",
        }),
        layout!(SchedPoll = "struct sched_poll" {
            ports: "ports",
            nr_ports: "nr_ports",
            timeout: "timeout",
        } pad { _pad }),
        layout!(XenFeatureInfo = "struct xen_feature_info" {
            submap_idx: "submap_idx",
            submap: "submap",
        }),
        layout!(XenCompileInfo = "struct xen_compile_info" {
            compiler: "compiler",
            compile_by: "compile_by",
            compile_domain: "compile_domain",
            compile_date: "compile_date",
        }),
        layout!(XenPlatformParameters = "struct xen_platform_parameters" {
            virt_start: "virt_start",
        }),
        layout!(CallbackRegister = "struct callback_register" {
            type_: "type",
            flags: "flags",
            address: "address",
        } pad { _pad }),
        layout!(CallbackUnregister = "struct callback_unregister" {
            type_: "type",
            _unused: "_unused",
        }),
        layout!(XenMachphysMapping = "struct xen_machphys_mapping" {
            v_start: "v_start",
            v_end: "v_end",
            max_mfn: "max_mfn",
        }),
        layout!(XenMemoryMap = "struct xen_memory_map" {
            nr_entries: "nr_entries",
            buffer: "buffer",
        } pad { _pad }),
        layout!(XenMemoryReservation = "struct xen_memory_reservation" {
            extent_start: "extent_start",
            nr_extents: "nr_extents",
            extent_order: "extent_order",
            mem_flags: "mem_flags",
            domid: "domid",
        } pad { _pad }),
        layout!(XenMachphysMfnList = "struct xen_machphys_mfn_list" {
            max_extents: "max_extents",
            extent_start: "extent_start",
            nr_extents: "nr_extents",
        } pad { _pad0, _pad1 }),
        layout!(XenAddToPhysmap = "struct xen_add_to_physmap" {
            domid: "domid",
            size: "size",
            space: "space",
            idx: "idx",
            gpfn: "gpfn",
        }),
        layout!(XenAddToPhysmapBatch = "struct xen_add_to_physmap_batch" {
            domid: "domid",
            space: "space",
            size: "size",
            u: "u.foreign_domid" | "u.res0",
            idxs: "idxs",
            gpfns: "gpfns",
            errs: "errs",
        }),
        layout!(XenRemoveFromPhysmap = "struct xen_remove_from_physmap" {
            domid: "domid",
            gpfn: "gpfn",
        } pad { _pad }),
        layout!(XenPodTarget = "struct xen_pod_target" {
            target_pages: "target_pages",
            tot_pages: "tot_pages",
            pod_cache_pages: "pod_cache_pages",
            pod_entries: "pod_entries",
            domid: "domid",
        } pad { _pad }),
        layout!(XenMemAcquireResource = "struct xen_mem_acquire_resource" {
            domid: "domid",
            type_: "type",
            id: "id",
            nr_frames: "nr_frames",
            pad: "pad",
            frame: "frame",
            frame_list: "frame_list",
        }),
        layout!(XenVnumaTopologyInfo = "struct xen_vnuma_topology_info" {
            domid: "domid",
            pad: "pad",
            nr_vnodes: "nr_vnodes",
            nr_vcpus: "nr_vcpus",
            nr_vmemranges: "nr_vmemranges",
            vdistance: "vdistance.h" | "vdistance.pad",
            vcpu_to_vnode: "vcpu_to_vnode.h" | "vcpu_to_vnode.pad",
            vmemrange: "vmemrange.h" | "vmemrange.pad",
        }),
        layout!(VcpuRunstateInfo = "struct vcpu_runstate_info" {
            state: "state",
            state_entry_time: "state_entry_time",
            time: "time",
        } pad { _pad0 }),
        layout!(VcpuRegisterRunstateMemoryArea = "struct vcpu_register_runstate_memory_area" {
            addr: "addr.p" | "addr.v" | "addr.h",
        }),
        layout!(VcpuSetPeriodicTimer = "struct vcpu_set_periodic_timer" {
            period_ns: "period_ns",
        }),
        layout!(VcpuSetSingleshotTimer = "struct vcpu_set_singleshot_timer" {
            timeout_abs_ns: "timeout_abs_ns",
            flags: "flags",
        } pad { _pad }),
        layout!(VcpuRegisterVcpuInfo = "struct vcpu_register_vcpu_info" {
            mfn: "mfn",
            offset: "offset",
            rsvd: "rsvd",
        }),
        layout!(VcpuRegisterTimeMemoryArea = "struct vcpu_register_time_memory_area" {
            addr: "addr.p" | "addr.v" | "addr.h",
        }),
        layout!(SchedRemoteShutdown = "struct sched_remote_shutdown" {
            domain_id: "domain_id",
            reason: "reason",
        } pad { _pad }),
        layout!(SchedWatchdog = "struct sched_watchdog" {
            id: "id",
            timeout: "timeout",
        }),
        layout!(SchedPinOverride = "struct sched_pin_override" {
            pcpu: "pcpu",
        }),
        layout!(VcpuGetPhysid = "struct vcpu_get_physid" {
            phys_id: "phys_id",
        }),
        layout!(EvtchnAllocUnbound = "struct evtchn_alloc_unbound" {
            dom: "dom",
            remote_dom: "remote_dom",
            port: "port",
        }),
        layout!(EvtchnBindInterdomain = "struct evtchn_bind_interdomain" {
            remote_dom: "remote_dom",
            remote_port: "remote_port",
            local_port: "local_port",
        } pad { _pad }),
        layout!(EvtchnBindVirq = "struct evtchn_bind_virq" {
            virq: "virq",
            vcpu: "vcpu",
            port: "port",
        }),
        layout!(EvtchnBindPirq = "struct evtchn_bind_pirq" {
            pirq: "pirq",
            flags: "flags",
            port: "port",
        }),
        layout!(EvtchnBindIpi = "struct evtchn_bind_ipi" {
            vcpu: "vcpu",
            port: "port",
        }),
        layout!(EvtchnClose = "struct evtchn_close" {
            port: "port",
        }),
        layout!(EvtchnSend = "struct evtchn_send" {
            port: "port",
        }),
        layout!(EvtchnUnmask = "struct evtchn_unmask" {
            port: "port",
        }),
        // `u.unbound.dom` and `u.interdomain.dom` are the low 16 bits of `u_val`.
        layout!(EvtchnStatus = "struct evtchn_status" {
            dom: "dom",
            port: "port",
            status: "status",
            vcpu: "vcpu",
            u_val: "u.pirq" | "u.virq",
            u_port: "u.interdomain.port",
        } pad { _pad }),
        layout!(EvtchnBindVcpu = "struct evtchn_bind_vcpu" {
            port: "port",
            vcpu: "vcpu",
        }),
        layout!(EvtchnReset = "struct evtchn_reset" {
            dom: "dom",
        }),
        layout!(EvtchnInitControl = "struct evtchn_init_control" {
            control_gfn: "control_gfn",
            offset: "offset",
            vcpu: "vcpu",
            link_bits: "link_bits",
            _pad: "_pad",
        }),
        layout!(EvtchnExpandArray = "struct evtchn_expand_array" {
            array_gfn: "array_gfn",
        }),
        layout!(EvtchnSetPriority = "struct evtchn_set_priority" {
            port: "port",
            priority: "priority",
        }),
        layout!(PhysdevSetIopl = "struct physdev_set_iopl" {
            iopl: "iopl",
        }),
        // `bitmap` is a guest handle: a struct holding one pointer.
        layout!(PhysdevSetIobitmap = "struct physdev_set_iobitmap" {
            bitmap: "bitmap",
            nr_ports: "nr_ports",
        } pad { _pad }),
        layout!(PhysdevEoi = "struct physdev_eoi" {
            irq: "irq",
        }),
        layout!(PhysdevIrqStatusQuery = "struct physdev_irq_status_query" {
            irq: "irq",
            flags: "flags",
        }),
        layout!(PhysdevPirqEoiGmfn = "struct physdev_pirq_eoi_gmfn" {
            gmfn: "gmfn",
        }),
        layout!(XennmiCallback = "struct xennmi_callback" {
            handler_address: "handler_address",
            pad: "pad",
        }),
        layout!(GrantEntryV1 = "struct grant_entry_v1" {
            flags: "flags",
            domid: "domid",
            frame: "frame",
        }),
        layout!(GnttabMapGrantRef = "struct gnttab_map_grant_ref" {
            host_addr: "host_addr",
            flags: "flags",
            r#ref: "ref",
            dom: "dom",
            status: "status",
            handle: "handle",
            dev_bus_addr: "dev_bus_addr",
        }),
        layout!(GnttabUnmapGrantRef = "struct gnttab_unmap_grant_ref" {
            host_addr: "host_addr",
            dev_bus_addr: "dev_bus_addr",
            handle: "handle",
            status: "status",
        } pad { _pad }),
        // `frame_list` is a guest handle: a struct holding one pointer.
        layout!(GnttabSetupTable = "struct gnttab_setup_table" {
            dom: "dom",
            nr_frames: "nr_frames",
            status: "status",
            frame_list: "frame_list",
        } pad { _pad0, _pad1 }),
        layout!(GnttabTransfer = "struct gnttab_transfer" {
            mfn: "mfn",
            domid: "domid",
            r#ref: "ref",
            status: "status",
        } pad { _pad0, _pad1 }),
        layout!(GnttabCopyPtr = "struct gnttab_copy_ptr" {
            u: "u" | "u.gmfn",
            domid: "domid",
            offset: "offset",
        } pad { _pad }),
        layout!(GnttabCopy = "struct gnttab_copy" {
            source: "source",
            dest: "dest",
            len: "len",
            flags: "flags",
            status: "status",
        } pad { _pad }),
        layout!(GnttabQuerySize = "struct gnttab_query_size" {
            dom: "dom",
            nr_frames: "nr_frames",
            max_nr_frames: "max_nr_frames",
            status: "status",
        } pad { _pad0, _pad1 }),
        layout!(GnttabUnmapAndReplace = "struct gnttab_unmap_and_replace" {
            host_addr: "host_addr",
            new_addr: "new_addr",
            handle: "handle",
            status: "status",
        } pad { _pad }),
        layout!(GnttabSetVersion = "struct gnttab_set_version" {
            version: "version",
        }),
        layout!(GnttabGetStatusFrames = "struct gnttab_get_status_frames" {
            nr_frames: "nr_frames",
            dom: "dom",
            status: "status",
            frame_list: "frame_list",
        }),
        layout!(GnttabGetVersion = "struct gnttab_get_version" {
            dom: "dom",
            pad: "pad",
            version: "version",
        }),
        layout!(GnttabSwapGrantRef = "struct gnttab_swap_grant_ref" {
            ref_a: "ref_a",
            ref_b: "ref_b",
            status: "status",
        } pad { _pad }),
        layout!(GnttabCacheFlush = "struct gnttab_cache_flush" {
            a: "a" | "a.dev_bus_addr",
            offset: "offset",
            length: "length",
            op: "op",
        }),
        layout!(BlkifRequestSegment = "struct blkif_request_segment" {
            gref: "gref",
            first_sect: "first_sect",
            last_sect: "last_sect",
        } pad { _pad0 }),
        layout!(BlkifRequest = "struct blkif_request" {
            operation: "operation",
            nr_segments: "nr_segments",
            handle: "handle",
            id: "id",
            sector_number: "sector_number",
            seg: "seg",
        } pad { _pad0 }),
        layout!(BlkifRequestDiscard = "struct blkif_request_discard" {
            operation: "operation",
            flag: "flag",
            handle: "handle",
            id: "id",
            sector_number: "sector_number",
            nr_sectors: "nr_sectors",
        } pad { _pad0 }),
        layout!(BlkifRequestIndirect = "struct blkif_request_indirect" {
            operation: "operation",
            indirect_op: "indirect_op",
            nr_segments: "nr_segments",
            id: "id",
            sector_number: "sector_number",
            handle: "handle",
            indirect_grefs: "indirect_grefs",
        } pad { _pad0, _pad1, _pad2 }),
        layout!(BlkifResponse = "struct blkif_response" {
            id: "id",
            operation: "operation",
            status: "status",
        } pad { _pad0, _pad1 }),
        layout!(XenconsInterface = "struct xencons_interface" {
            r#in: "in",
            out: "out",
            in_cons: "in_cons",
            in_prod: "in_prod",
            out_cons: "out_cons",
            out_prod: "out_prod",
        }),
        layout!(XsdSockmsg = "struct xsd_sockmsg" {
            r#type: "type",
            req_id: "req_id",
            tx_id: "tx_id",
            len: "len",
        }),
        layout!(XenstoreDomainInterface = "struct xenstore_domain_interface" {
            req: "req",
            rsp: "rsp",
            req_cons: "req_cons",
            req_prod: "req_prod",
            rsp_cons: "rsp_cons",
            rsp_prod: "rsp_prod",
            server_features: "server_features",
            connection: "connection",
            error: "error",
        }),
    ]
}

fn constants() -> Vec<Const> {
    consts! {
        // ---- hypercall.rs (xen.h) ----
        "__HYPERVISOR_set_trap_table" => hypercall::HYPERVISOR_SET_TRAP_TABLE,
        "__HYPERVISOR_mmu_update" => hypercall::HYPERVISOR_MMU_UPDATE,
        "__HYPERVISOR_set_gdt" => hypercall::HYPERVISOR_SET_GDT,
        "__HYPERVISOR_stack_switch" => hypercall::HYPERVISOR_STACK_SWITCH,
        "__HYPERVISOR_set_callbacks" => hypercall::HYPERVISOR_SET_CALLBACKS,
        "__HYPERVISOR_fpu_taskswitch" => hypercall::HYPERVISOR_FPU_TASKSWITCH,
        "__HYPERVISOR_sched_op_compat" => hypercall::HYPERVISOR_SCHED_OP_COMPAT,
        "__HYPERVISOR_platform_op" => hypercall::HYPERVISOR_PLATFORM_OP,
        "__HYPERVISOR_set_debugreg" => hypercall::HYPERVISOR_SET_DEBUGREG,
        "__HYPERVISOR_get_debugreg" => hypercall::HYPERVISOR_GET_DEBUGREG,
        "__HYPERVISOR_update_descriptor" => hypercall::HYPERVISOR_UPDATE_DESCRIPTOR,
        "__HYPERVISOR_memory_op" => hypercall::HYPERVISOR_MEMORY_OP,
        "__HYPERVISOR_multicall" => hypercall::HYPERVISOR_MULTICALL,
        "__HYPERVISOR_update_va_mapping" => hypercall::HYPERVISOR_UPDATE_VA_MAPPING,
        "__HYPERVISOR_set_timer_op" => hypercall::HYPERVISOR_SET_TIMER_OP,
        "__HYPERVISOR_event_channel_op_compat" => hypercall::HYPERVISOR_EVENT_CHANNEL_OP_COMPAT,
        "__HYPERVISOR_xen_version" => hypercall::HYPERVISOR_XEN_VERSION,
        "__HYPERVISOR_console_io" => hypercall::HYPERVISOR_CONSOLE_IO,
        "__HYPERVISOR_physdev_op_compat" => hypercall::HYPERVISOR_PHYSDEV_OP_COMPAT,
        "__HYPERVISOR_grant_table_op" => hypercall::HYPERVISOR_GRANT_TABLE_OP,
        "__HYPERVISOR_vm_assist" => hypercall::HYPERVISOR_VM_ASSIST,
        "__HYPERVISOR_update_va_mapping_otherdomain" =>
            hypercall::HYPERVISOR_UPDATE_VA_MAPPING_OTHERDOMAIN,
        "__HYPERVISOR_iret" => hypercall::HYPERVISOR_IRET,
        "__HYPERVISOR_vcpu_op" => hypercall::HYPERVISOR_VCPU_OP,
        "__HYPERVISOR_set_segment_base" => hypercall::HYPERVISOR_SET_SEGMENT_BASE,
        "__HYPERVISOR_mmuext_op" => hypercall::HYPERVISOR_MMUEXT_OP,
        "__HYPERVISOR_xsm_op" => hypercall::HYPERVISOR_XSM_OP,
        "__HYPERVISOR_nmi_op" => hypercall::HYPERVISOR_NMI_OP,
        "__HYPERVISOR_sched_op" => hypercall::HYPERVISOR_SCHED_OP,
        "__HYPERVISOR_callback_op" => hypercall::HYPERVISOR_CALLBACK_OP,
        "__HYPERVISOR_xenoprof_op" => hypercall::HYPERVISOR_XENOPROF_OP,
        "__HYPERVISOR_event_channel_op" => hypercall::HYPERVISOR_EVENT_CHANNEL_OP,
        "__HYPERVISOR_physdev_op" => hypercall::HYPERVISOR_PHYSDEV_OP,
        "__HYPERVISOR_hvm_op" => hypercall::HYPERVISOR_HVM_OP,
        "__HYPERVISOR_sysctl" => hypercall::HYPERVISOR_SYSCTL,
        "__HYPERVISOR_domctl" => hypercall::HYPERVISOR_DOMCTL,
        "__HYPERVISOR_kexec_op" => hypercall::HYPERVISOR_KEXEC_OP,
        "__HYPERVISOR_tmem_op" => hypercall::HYPERVISOR_TMEM_OP,
        "__HYPERVISOR_argo_op" => hypercall::HYPERVISOR_ARGO_OP,
        "__HYPERVISOR_xenpmu_op" => hypercall::HYPERVISOR_XENPMU_OP,
        "__HYPERVISOR_dm_op" => hypercall::HYPERVISOR_DM_OP,
        "__HYPERVISOR_hypfs_op" => hypercall::HYPERVISOR_HYPFS_OP,
        "__HYPERVISOR_arch_0" => hypercall::HYPERVISOR_ARCH_0,
        "__HYPERVISOR_arch_1" => hypercall::HYPERVISOR_ARCH_1,
        "__HYPERVISOR_arch_2" => hypercall::HYPERVISOR_ARCH_2,
        "__HYPERVISOR_arch_3" => hypercall::HYPERVISOR_ARCH_3,
        "__HYPERVISOR_arch_4" => hypercall::HYPERVISOR_ARCH_4,
        "__HYPERVISOR_arch_5" => hypercall::HYPERVISOR_ARCH_5,
        "__HYPERVISOR_arch_6" => hypercall::HYPERVISOR_ARCH_6,
        "__HYPERVISOR_arch_7" => hypercall::HYPERVISOR_ARCH_7,

        // ---- xen.rs: types, domain ids, virtual layout, selectors (xen.h, arch-x86/*.h) ----
        "XEN_PAGE_SHIFT" => xen::PAGE_SHIFT,
        "1UL << XEN_PAGE_SHIFT" => xen::PAGE_SIZE,
        "sizeof(xen_pfn_t)" => size_of::<xen::XenPfn>(),
        "sizeof(domid_t)" => size_of::<xen::DomId>(),
        "DOMID_FIRST_RESERVED" => xen::DOMID_FIRST_RESERVED,
        "DOMID_SELF" => xen::DOMID_SELF,
        "DOMID_IO" => xen::DOMID_IO,
        "DOMID_XEN" => xen::DOMID_XEN,
        "DOMID_COW" => xen::DOMID_COW,
        "DOMID_INVALID" => xen::DOMID_INVALID,
        "DOMID_IDLE" => xen::DOMID_IDLE,
        "DOMID_MASK" => xen::DOMID_MASK,
        "HYPERVISOR_VIRT_START" => xen::HYPERVISOR_VIRT_START,
        "__HYPERVISOR_VIRT_START" => xen::HYPERVISOR_VIRT_START,
        "HYPERVISOR_VIRT_END" => xen::HYPERVISOR_VIRT_END,
        "__HYPERVISOR_VIRT_END" => xen::HYPERVISOR_VIRT_END,
        "MACH2PHYS_VIRT_START" => xen::MACH2PHYS_VIRT_START,
        "MACH2PHYS_VIRT_END" => xen::MACH2PHYS_VIRT_END,
        "MACH2PHYS_NR_ENTRIES" => xen::MACH2PHYS_NR_ENTRIES,
        "(HYPERVISOR_VIRT_START >> 39) & 511" => xen::HYPERVISOR_L4_FIRST,
        "((HYPERVISOR_VIRT_END - 1) >> 39) & 511" => xen::HYPERVISOR_L4_LAST,
        "FIRST_RESERVED_GDT_PAGE" => xen::FIRST_RESERVED_GDT_PAGE,
        "FIRST_RESERVED_GDT_BYTE" => xen::FIRST_RESERVED_GDT_BYTE,
        "FIRST_RESERVED_GDT_ENTRY" => xen::FIRST_RESERVED_GDT_ENTRY,
        "FLAT_RING3_CS32" => xen::FLAT_RING3_CS32,
        "FLAT_RING3_CS64" => xen::FLAT_RING3_CS64,
        "FLAT_RING3_DS32" => xen::FLAT_RING3_DS32,
        "FLAT_RING3_DS64" => xen::FLAT_RING3_DS64,
        "FLAT_RING3_SS32" => xen::FLAT_RING3_SS32,
        "FLAT_RING3_SS64" => xen::FLAT_RING3_SS64,
        "FLAT_KERNEL_CS64" => xen::FLAT_KERNEL_CS64,
        "FLAT_KERNEL_DS64" => xen::FLAT_KERNEL_DS64,
        "FLAT_KERNEL_SS64" => xen::FLAT_KERNEL_SS64,
        "FLAT_KERNEL_CS32" => xen::FLAT_KERNEL_CS32,
        "FLAT_KERNEL_DS32" => xen::FLAT_KERNEL_DS32,
        "FLAT_KERNEL_SS32" => xen::FLAT_KERNEL_SS32,
        "FLAT_KERNEL_CS" => xen::FLAT_KERNEL_CS,
        "FLAT_KERNEL_DS" => xen::FLAT_KERNEL_DS,
        "FLAT_KERNEL_SS" => xen::FLAT_KERNEL_SS,
        "FLAT_USER_CS64" => xen::FLAT_USER_CS64,
        "FLAT_USER_DS64" => xen::FLAT_USER_DS64,
        "FLAT_USER_SS64" => xen::FLAT_USER_SS64,
        "FLAT_USER_CS32" => xen::FLAT_USER_CS32,
        "FLAT_USER_DS32" => xen::FLAT_USER_DS32,
        "FLAT_USER_SS32" => xen::FLAT_USER_SS32,
        "FLAT_USER_CS" => xen::FLAT_USER_CS,
        "FLAT_USER_DS" => xen::FLAT_USER_DS,
        "FLAT_USER_SS" => xen::FLAT_USER_SS,

        // ---- start_info, vcpu_info, shared_info ----
        "MAX_GUEST_CMDLINE" => xen::MAX_GUEST_CMDLINE,
        "SIF_PRIVILEGED" => xen::SIF_PRIVILEGED,
        "SIF_INITDOMAIN" => xen::SIF_INITDOMAIN,
        "SIF_MULTIBOOT_MOD" => xen::SIF_MULTIBOOT_MOD,
        "SIF_MOD_START_PFN" => xen::SIF_MOD_START_PFN,
        "SIF_VIRT_P2M_4TOOLS" => xen::SIF_VIRT_P2M_4TOOLS,
        "SIF_PM_MASK" => xen::SIF_PM_MASK,
        "XEN_LEGACY_MAX_VCPUS" => xen::XEN_LEGACY_MAX_VCPUS,
        "XEN_PVCLOCK_TSC_STABLE_BIT" => xen::XEN_PVCLOCK_TSC_STABLE_BIT,
        "XEN_PVCLOCK_GUEST_STOPPED" => xen::XEN_PVCLOCK_GUEST_STOPPED,

        // ---- trap_info flags: the header only has accessor macros ----
        "({ struct trap_info t = { .flags = 0xff }; TI_GET_DPL(&t); })" => xen::TI_DPL_MASK,
        "({ struct trap_info t = { 0 }; TI_SET_IF(&t, 1); t.flags; })" => xen::TI_SET_IF,

        // ---- MMU ----
        "MMU_NORMAL_PT_UPDATE" => xen::MMU_NORMAL_PT_UPDATE,
        "MMU_MACHPHYS_UPDATE" => xen::MMU_MACHPHYS_UPDATE,
        "MMU_PT_UPDATE_PRESERVE_AD" => xen::MMU_PT_UPDATE_PRESERVE_AD,
        "MMU_PT_UPDATE_NO_TRANSLATE" => xen::MMU_PT_UPDATE_NO_TRANSLATE,
        "MMUEXT_PIN_L1_TABLE" => xen::MMUEXT_PIN_L1_TABLE,
        "MMUEXT_PIN_L2_TABLE" => xen::MMUEXT_PIN_L2_TABLE,
        "MMUEXT_PIN_L3_TABLE" => xen::MMUEXT_PIN_L3_TABLE,
        "MMUEXT_PIN_L4_TABLE" => xen::MMUEXT_PIN_L4_TABLE,
        "MMUEXT_UNPIN_TABLE" => xen::MMUEXT_UNPIN_TABLE,
        "MMUEXT_NEW_BASEPTR" => xen::MMUEXT_NEW_BASEPTR,
        "MMUEXT_TLB_FLUSH_LOCAL" => xen::MMUEXT_TLB_FLUSH_LOCAL,
        "MMUEXT_INVLPG_LOCAL" => xen::MMUEXT_INVLPG_LOCAL,
        "MMUEXT_TLB_FLUSH_MULTI" => xen::MMUEXT_TLB_FLUSH_MULTI,
        "MMUEXT_INVLPG_MULTI" => xen::MMUEXT_INVLPG_MULTI,
        "MMUEXT_TLB_FLUSH_ALL" => xen::MMUEXT_TLB_FLUSH_ALL,
        "MMUEXT_INVLPG_ALL" => xen::MMUEXT_INVLPG_ALL,
        "MMUEXT_FLUSH_CACHE" => xen::MMUEXT_FLUSH_CACHE,
        "MMUEXT_SET_LDT" => xen::MMUEXT_SET_LDT,
        "MMUEXT_NEW_USER_BASEPTR" => xen::MMUEXT_NEW_USER_BASEPTR,
        "MMUEXT_CLEAR_PAGE" => xen::MMUEXT_CLEAR_PAGE,
        "MMUEXT_COPY_PAGE" => xen::MMUEXT_COPY_PAGE,
        "MMUEXT_FLUSH_CACHE_GLOBAL" => xen::MMUEXT_FLUSH_CACHE_GLOBAL,
        "MMUEXT_MARK_SUPER" => xen::MMUEXT_MARK_SUPER,
        "MMUEXT_UNMARK_SUPER" => xen::MMUEXT_UNMARK_SUPER,
        "UVMF_NONE" => xen::UVMF_NONE,
        "UVMF_TLB_FLUSH" => xen::UVMF_TLB_FLUSH,
        "UVMF_INVLPG" => xen::UVMF_INVLPG,
        "UVMF_FLUSHTYPE_MASK" => xen::UVMF_FLUSHTYPE_MASK,
        "UVMF_MULTI" => xen::UVMF_MULTI,
        "UVMF_LOCAL" => xen::UVMF_LOCAL,
        "UVMF_ALL" => xen::UVMF_ALL,

        // ---- vm_assist, set_segment_base, VGCF ----
        "VMASST_CMD_enable" => xen::VMASST_CMD_ENABLE,
        "VMASST_CMD_disable" => xen::VMASST_CMD_DISABLE,
        "VMASST_TYPE_4gb_segments" => xen::VMASST_TYPE_4GB_SEGMENTS,
        "VMASST_TYPE_4gb_segments_notify" => xen::VMASST_TYPE_4GB_SEGMENTS_NOTIFY,
        "VMASST_TYPE_writable_pagetables" => xen::VMASST_TYPE_WRITABLE_PAGETABLES,
        "VMASST_TYPE_pae_extended_cr3" => xen::VMASST_TYPE_PAE_EXTENDED_CR3,
        "VMASST_TYPE_architectural_iopl" => xen::VMASST_TYPE_ARCHITECTURAL_IOPL,
        "VMASST_TYPE_runstate_update_flag" => xen::VMASST_TYPE_RUNSTATE_UPDATE_FLAG,
        "VMASST_TYPE_m2p_strict" => xen::VMASST_TYPE_M2P_STRICT,
        "SEGBASE_FS" => xen::SEGBASE_FS,
        "SEGBASE_GS_USER" => xen::SEGBASE_GS_USER,
        "SEGBASE_GS_KERNEL" => xen::SEGBASE_GS_KERNEL,
        "SEGBASE_GS_USER_SEL" => xen::SEGBASE_GS_USER_SEL,
        "VGCF_in_syscall" => xen::VGCF_IN_SYSCALL,
        "VGCF_IN_SYSCALL" => xen::VGCF_IN_SYSCALL,
        "VGCF_i387_valid" => xen::VGCF_I387_VALID,
        "VGCF_I387_VALID" => xen::VGCF_I387_VALID,
        "VGCF_in_kernel" => xen::VGCF_IN_KERNEL,
        "VGCF_IN_KERNEL" => xen::VGCF_IN_KERNEL,
        "VGCF_failsafe_disables_events" => xen::VGCF_FAILSAFE_DISABLES_EVENTS,
        "VGCF_syscall_disables_events" => xen::VGCF_SYSCALL_DISABLES_EVENTS,
        "VGCF_online" => xen::VGCF_ONLINE,

        // ---- elfnote.rs ----
        "XEN_ELFNOTE_INFO" => elfnote::XEN_ELFNOTE_INFO,
        "XEN_ELFNOTE_ENTRY" => elfnote::XEN_ELFNOTE_ENTRY,
        "XEN_ELFNOTE_HYPERCALL_PAGE" => elfnote::XEN_ELFNOTE_HYPERCALL_PAGE,
        "XEN_ELFNOTE_VIRT_BASE" => elfnote::XEN_ELFNOTE_VIRT_BASE,
        "XEN_ELFNOTE_PADDR_OFFSET" => elfnote::XEN_ELFNOTE_PADDR_OFFSET,
        "XEN_ELFNOTE_XEN_VERSION" => elfnote::XEN_ELFNOTE_XEN_VERSION,
        "XEN_ELFNOTE_GUEST_OS" => elfnote::XEN_ELFNOTE_GUEST_OS,
        "XEN_ELFNOTE_GUEST_VERSION" => elfnote::XEN_ELFNOTE_GUEST_VERSION,
        "XEN_ELFNOTE_LOADER" => elfnote::XEN_ELFNOTE_LOADER,
        "XEN_ELFNOTE_PAE_MODE" => elfnote::XEN_ELFNOTE_PAE_MODE,
        "XEN_ELFNOTE_FEATURES" => elfnote::XEN_ELFNOTE_FEATURES,
        "XEN_ELFNOTE_BSD_SYMTAB" => elfnote::XEN_ELFNOTE_BSD_SYMTAB,
        "XEN_ELFNOTE_HV_START_LOW" => elfnote::XEN_ELFNOTE_HV_START_LOW,
        "XEN_ELFNOTE_L1_MFN_VALID" => elfnote::XEN_ELFNOTE_L1_MFN_VALID,
        "XEN_ELFNOTE_SUSPEND_CANCEL" => elfnote::XEN_ELFNOTE_SUSPEND_CANCEL,
        "XEN_ELFNOTE_INIT_P2M" => elfnote::XEN_ELFNOTE_INIT_P2M,
        "XEN_ELFNOTE_MOD_START_PFN" => elfnote::XEN_ELFNOTE_MOD_START_PFN,
        "XEN_ELFNOTE_SUPPORTED_FEATURES" => elfnote::XEN_ELFNOTE_SUPPORTED_FEATURES,
        "XEN_ELFNOTE_PHYS32_ENTRY" => elfnote::XEN_ELFNOTE_PHYS32_ENTRY,
        "XEN_ELFNOTE_MAX" => elfnote::XEN_ELFNOTE_MAX,
        "XEN_ELFNOTE_CRASH_INFO" => elfnote::XEN_ELFNOTE_CRASH_INFO,
        "XEN_ELFNOTE_CRASH_REGS" => elfnote::XEN_ELFNOTE_CRASH_REGS,
        "XEN_ELFNOTE_DUMPCORE_NONE" => elfnote::XEN_ELFNOTE_DUMPCORE_NONE,
        "XEN_ELFNOTE_DUMPCORE_HEADER" => elfnote::XEN_ELFNOTE_DUMPCORE_HEADER,
        "XEN_ELFNOTE_DUMPCORE_XEN_VERSION" => elfnote::XEN_ELFNOTE_DUMPCORE_XEN_VERSION,
        "XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION" => elfnote::XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION,

        // ---- console.rs (xen.h, io/console.h) ----
        "CONSOLEIO_write" => console::CONSOLEIO_WRITE,
        "CONSOLEIO_read" => console::CONSOLEIO_READ,
        "sizeof(((struct xencons_interface *)0)->in)" => console::XENCONS_IN_SIZE,
        "sizeof(((struct xencons_interface *)0)->out)" => console::XENCONS_OUT_SIZE,

        // ---- io/xs_wire.rs (the XS_ types are enumerators, not macros) ----
        "(unsigned)XS_CONTROL" => xs_wire::XS_CONTROL,
        "XS_DEBUG" => xs_wire::XS_CONTROL,
        "(unsigned)XS_DIRECTORY" => xs_wire::XS_DIRECTORY,
        "(unsigned)XS_READ" => xs_wire::XS_READ,
        "(unsigned)XS_GET_PERMS" => xs_wire::XS_GET_PERMS,
        "(unsigned)XS_WATCH" => xs_wire::XS_WATCH,
        "(unsigned)XS_UNWATCH" => xs_wire::XS_UNWATCH,
        "(unsigned)XS_TRANSACTION_START" => xs_wire::XS_TRANSACTION_START,
        "(unsigned)XS_TRANSACTION_END" => xs_wire::XS_TRANSACTION_END,
        "(unsigned)XS_INTRODUCE" => xs_wire::XS_INTRODUCE,
        "(unsigned)XS_RELEASE" => xs_wire::XS_RELEASE,
        "(unsigned)XS_GET_DOMAIN_PATH" => xs_wire::XS_GET_DOMAIN_PATH,
        "(unsigned)XS_WRITE" => xs_wire::XS_WRITE,
        "(unsigned)XS_MKDIR" => xs_wire::XS_MKDIR,
        "(unsigned)XS_RM" => xs_wire::XS_RM,
        "(unsigned)XS_SET_PERMS" => xs_wire::XS_SET_PERMS,
        "(unsigned)XS_WATCH_EVENT" => xs_wire::XS_WATCH_EVENT,
        "(unsigned)XS_ERROR" => xs_wire::XS_ERROR,
        "(unsigned)XS_IS_DOMAIN_INTRODUCED" => xs_wire::XS_IS_DOMAIN_INTRODUCED,
        "(unsigned)XS_RESUME" => xs_wire::XS_RESUME,
        "(unsigned)XS_SET_TARGET" => xs_wire::XS_SET_TARGET,
        "(unsigned)XS_RESET_WATCHES" => xs_wire::XS_RESET_WATCHES,
        "(unsigned)XS_DIRECTORY_PART" => xs_wire::XS_DIRECTORY_PART,
        "(unsigned)XS_TYPE_COUNT" => xs_wire::XS_TYPE_COUNT,
        "(unsigned)XS_INVALID" => xs_wire::XS_INVALID,
        "(unsigned)XS_WATCH_PATH" => xs_wire::XS_WATCH_PATH,
        "(unsigned)XS_WATCH_TOKEN" => xs_wire::XS_WATCH_TOKEN,
        "XENSTORE_RING_SIZE" => xs_wire::XENSTORE_RING_SIZE,
        "XENSTORE_PAYLOAD_MAX" => xs_wire::XENSTORE_PAYLOAD_MAX,
        "XENSTORE_ABS_PATH_MAX" => xs_wire::XENSTORE_ABS_PATH_MAX,
        "XENSTORE_REL_PATH_MAX" => xs_wire::XENSTORE_REL_PATH_MAX,
        "XENSTORE_SERVER_FEATURE_RECONNECTION" => xs_wire::XENSTORE_SERVER_FEATURE_RECONNECTION,
        "XENSTORE_SERVER_FEATURE_ERROR" => xs_wire::XENSTORE_SERVER_FEATURE_ERROR,
        "XENSTORE_CONNECTED" => xs_wire::XENSTORE_CONNECTED,
        "XENSTORE_RECONNECT" => xs_wire::XENSTORE_RECONNECT,
        "XENSTORE_ERROR_NONE" => xs_wire::XENSTORE_ERROR_NONE,
        "XENSTORE_ERROR_COMM" => xs_wire::XENSTORE_ERROR_COMM,
        "XENSTORE_ERROR_RINGIDX" => xs_wire::XENSTORE_ERROR_RINGIDX,
        "XENSTORE_ERROR_PROTO" => xs_wire::XENSTORE_ERROR_PROTO,

        // ---- sched.rs ----
        "SCHEDOP_yield" => sched::SCHEDOP_YIELD,
        "SCHEDOP_block" => sched::SCHEDOP_BLOCK,
        "SCHEDOP_shutdown" => sched::SCHEDOP_SHUTDOWN,
        "SCHEDOP_poll" => sched::SCHEDOP_POLL,
        "SCHEDOP_remote_shutdown" => sched::SCHEDOP_REMOTE_SHUTDOWN,
        "SCHEDOP_shutdown_code" => sched::SCHEDOP_SHUTDOWN_CODE,
        "SCHEDOP_watchdog" => sched::SCHEDOP_WATCHDOG,
        "SCHEDOP_pin_override" => sched::SCHEDOP_PIN_OVERRIDE,
        "SHUTDOWN_poweroff" => sched::SHUTDOWN_POWEROFF,
        "SHUTDOWN_reboot" => sched::SHUTDOWN_REBOOT,
        "SHUTDOWN_suspend" => sched::SHUTDOWN_SUSPEND,
        "SHUTDOWN_crash" => sched::SHUTDOWN_CRASH,
        "SHUTDOWN_watchdog" => sched::SHUTDOWN_WATCHDOG,
        "SHUTDOWN_soft_reset" => sched::SHUTDOWN_SOFT_RESET,
        "SHUTDOWN_MAX" => sched::SHUTDOWN_MAX,

        // ---- version.rs (version.h, features.h) ----
        "XENVER_version" => version::XENVER_VERSION,
        "XENVER_extraversion" => version::XENVER_EXTRAVERSION,
        "XENVER_compile_info" => version::XENVER_COMPILE_INFO,
        "XENVER_capabilities" => version::XENVER_CAPABILITIES,
        "XENVER_changeset" => version::XENVER_CHANGESET,
        "XENVER_platform_parameters" => version::XENVER_PLATFORM_PARAMETERS,
        "XENVER_get_features" => version::XENVER_GET_FEATURES,
        "XENVER_pagesize" => version::XENVER_PAGESIZE,
        "XENVER_guest_handle" => version::XENVER_GUEST_HANDLE,
        "XENVER_commandline" => version::XENVER_COMMANDLINE,
        "XENVER_build_id" => version::XENVER_BUILD_ID,
        "XEN_EXTRAVERSION_LEN" => version::XEN_EXTRAVERSION_LEN,
        "XEN_CAPABILITIES_INFO_LEN" => version::XEN_CAPABILITIES_INFO_LEN,
        "XEN_CHANGESET_INFO_LEN" => version::XEN_CHANGESET_INFO_LEN,
        "sizeof(xen_commandline_t)" => version::XEN_COMMANDLINE_LEN,
        "XENFEAT_writable_page_tables" => version::XENFEAT_WRITABLE_PAGE_TABLES,
        "XENFEAT_writable_descriptor_tables" => version::XENFEAT_WRITABLE_DESCRIPTOR_TABLES,
        "XENFEAT_auto_translated_physmap" => version::XENFEAT_AUTO_TRANSLATED_PHYSMAP,
        "XENFEAT_supervisor_mode_kernel" => version::XENFEAT_SUPERVISOR_MODE_KERNEL,
        "XENFEAT_pae_pgdir_above_4gb" => version::XENFEAT_PAE_PGDIR_ABOVE_4GB,
        "XENFEAT_mmu_pt_update_preserve_ad" => version::XENFEAT_MMU_PT_UPDATE_PRESERVE_AD,
        "XENFEAT_highmem_assist" => version::XENFEAT_HIGHMEM_ASSIST,
        "XENFEAT_gnttab_map_avail_bits" => version::XENFEAT_GNTTAB_MAP_AVAIL_BITS,
        "XENFEAT_hvm_callback_vector" => version::XENFEAT_HVM_CALLBACK_VECTOR,
        "XENFEAT_hvm_safe_pvclock" => version::XENFEAT_HVM_SAFE_PVCLOCK,
        "XENFEAT_hvm_pirqs" => version::XENFEAT_HVM_PIRQS,
        "XENFEAT_dom0" => version::XENFEAT_DOM0,
        "XENFEAT_memory_op_vnode_supported" => version::XENFEAT_MEMORY_OP_VNODE_SUPPORTED,
        "XENFEAT_ARM_SMCCC_supported" => version::XENFEAT_ARM_SMCCC_SUPPORTED,
        "XENFEAT_linux_rsdp_unrestricted" => version::XENFEAT_LINUX_RSDP_UNRESTRICTED,
        "XENFEAT_not_direct_mapped" => version::XENFEAT_NOT_DIRECT_MAPPED,
        "XENFEAT_direct_mapped" => version::XENFEAT_DIRECT_MAPPED,
        "XENFEAT_NR_SUBMAPS" => version::XENFEAT_NR_SUBMAPS,

        // ---- callback.rs ----
        "CALLBACKOP_register" => callback::CALLBACKOP_REGISTER,
        "CALLBACKOP_unregister" => callback::CALLBACKOP_UNREGISTER,
        "CALLBACKTYPE_event" => callback::CALLBACKTYPE_EVENT,
        "CALLBACKTYPE_failsafe" => callback::CALLBACKTYPE_FAILSAFE,
        "CALLBACKTYPE_syscall" => callback::CALLBACKTYPE_SYSCALL,
        "CALLBACKTYPE_sysenter_deprecated" => callback::CALLBACKTYPE_SYSENTER_DEPRECATED,
        "CALLBACKTYPE_nmi" => callback::CALLBACKTYPE_NMI,
        "CALLBACKTYPE_sysenter" => callback::CALLBACKTYPE_SYSENTER,
        "CALLBACKTYPE_syscall32" => callback::CALLBACKTYPE_SYSCALL32,
        "CALLBACKF_mask_events" => callback::CALLBACKF_MASK_EVENTS,

        // ---- event.rs (event_channel.h, xen.h) ----
        "EVTCHNOP_bind_interdomain" => event::EVTCHNOP_BIND_INTERDOMAIN,
        "EVTCHNOP_bind_virq" => event::EVTCHNOP_BIND_VIRQ,
        "EVTCHNOP_bind_pirq" => event::EVTCHNOP_BIND_PIRQ,
        "EVTCHNOP_close" => event::EVTCHNOP_CLOSE,
        "EVTCHNOP_send" => event::EVTCHNOP_SEND,
        "EVTCHNOP_status" => event::EVTCHNOP_STATUS,
        "EVTCHNOP_alloc_unbound" => event::EVTCHNOP_ALLOC_UNBOUND,
        "EVTCHNOP_bind_ipi" => event::EVTCHNOP_BIND_IPI,
        "EVTCHNOP_bind_vcpu" => event::EVTCHNOP_BIND_VCPU,
        "EVTCHNOP_unmask" => event::EVTCHNOP_UNMASK,
        "EVTCHNOP_reset" => event::EVTCHNOP_RESET,
        "EVTCHNOP_init_control" => event::EVTCHNOP_INIT_CONTROL,
        "EVTCHNOP_expand_array" => event::EVTCHNOP_EXPAND_ARRAY,
        "EVTCHNOP_set_priority" => event::EVTCHNOP_SET_PRIORITY,
        "EVTCHN_2L_NR_CHANNELS" => event::EVTCHN_2L_NR_CHANNELS,
        "EVTCHNSTAT_closed" => event::EVTCHNSTAT_CLOSED,
        "EVTCHNSTAT_unbound" => event::EVTCHNSTAT_UNBOUND,
        "EVTCHNSTAT_interdomain" => event::EVTCHNSTAT_INTERDOMAIN,
        "EVTCHNSTAT_pirq" => event::EVTCHNSTAT_PIRQ,
        "EVTCHNSTAT_virq" => event::EVTCHNSTAT_VIRQ,
        "EVTCHNSTAT_ipi" => event::EVTCHNSTAT_IPI,
        "BIND_PIRQ__WILL_SHARE" => event::BIND_PIRQ__WILL_SHARE,
        "VIRQ_TIMER" => event::VIRQ_TIMER,
        "VIRQ_DEBUG" => event::VIRQ_DEBUG,
        "VIRQ_CONSOLE" => event::VIRQ_CONSOLE,
        "VIRQ_DOM_EXC" => event::VIRQ_DOM_EXC,
        "VIRQ_TBUF" => event::VIRQ_TBUF,
        "VIRQ_DEBUGGER" => event::VIRQ_DEBUGGER,
        "VIRQ_XENOPROF" => event::VIRQ_XENOPROF,
        "VIRQ_CON_RING" => event::VIRQ_CON_RING,
        "VIRQ_PCPU_STATE" => event::VIRQ_PCPU_STATE,
        "VIRQ_MEM_EVENT" => event::VIRQ_MEM_EVENT,
        "VIRQ_ARGO" => event::VIRQ_ARGO,
        "VIRQ_ENOMEM" => event::VIRQ_ENOMEM,
        "VIRQ_XENPMU" => event::VIRQ_XENPMU,
        "VIRQ_ARCH_0" => event::VIRQ_ARCH_0,
        "VIRQ_ARCH_1" => event::VIRQ_ARCH_1,
        "VIRQ_ARCH_2" => event::VIRQ_ARCH_2,
        "VIRQ_ARCH_3" => event::VIRQ_ARCH_3,
        "VIRQ_ARCH_4" => event::VIRQ_ARCH_4,
        "VIRQ_ARCH_5" => event::VIRQ_ARCH_5,
        "VIRQ_ARCH_6" => event::VIRQ_ARCH_6,
        "VIRQ_ARCH_7" => event::VIRQ_ARCH_7,
        "NR_VIRQS" => event::NR_VIRQS,

        // ---- memory.rs ----
        "XENMEM_increase_reservation" => memory::XENMEM_INCREASE_RESERVATION,
        "XENMEM_decrease_reservation" => memory::XENMEM_DECREASE_RESERVATION,
        "XENMEM_maximum_ram_page" => memory::XENMEM_MAXIMUM_RAM_PAGE,
        "XENMEM_current_reservation" => memory::XENMEM_CURRENT_RESERVATION,
        "XENMEM_maximum_reservation" => memory::XENMEM_MAXIMUM_RESERVATION,
        "XENMEM_machphys_mfn_list" => memory::XENMEM_MACHPHYS_MFN_LIST,
        "XENMEM_populate_physmap" => memory::XENMEM_POPULATE_PHYSMAP,
        "XENMEM_add_to_physmap" => memory::XENMEM_ADD_TO_PHYSMAP,
        "XENMEM_memory_map" => memory::XENMEM_MEMORY_MAP,
        "XENMEM_machine_memory_map" => memory::XENMEM_MACHINE_MEMORY_MAP,
        "XENMEM_exchange" => memory::XENMEM_EXCHANGE,
        "XENMEM_machphys_mapping" => memory::XENMEM_MACHPHYS_MAPPING,
        "XENMEM_set_memory_map" => memory::XENMEM_SET_MEMORY_MAP,
        "XENMEM_maximum_gpfn" => memory::XENMEM_MAXIMUM_GPFN,
        "XENMEM_remove_from_physmap" => memory::XENMEM_REMOVE_FROM_PHYSMAP,
        "XENMEM_set_pod_target" => memory::XENMEM_SET_POD_TARGET,
        "XENMEM_get_pod_target" => memory::XENMEM_GET_POD_TARGET,
        "XENMEM_add_to_physmap_batch" => memory::XENMEM_ADD_TO_PHYSMAP_BATCH,
        "XENMEM_machphys_compat_mfn_list" => memory::XENMEM_MACHPHYS_COMPAT_MFN_LIST,
        "XENMEM_get_vnumainfo" => memory::XENMEM_GET_VNUMAINFO,
        "XENMEM_acquire_resource" => memory::XENMEM_ACQUIRE_RESOURCE,
        "XENMEMF_populate_on_demand" => memory::XENMEMF_POPULATE_ON_DEMAND,
        "XENMEMF_exact_node_request" => memory::XENMEMF_EXACT_NODE_REQUEST,
        "XENMEMF_vnode" => memory::XENMEMF_VNODE,
        "XENMAPSPACE_shared_info" => memory::XENMAPSPACE_SHARED_INFO,
        "XENMAPSPACE_grant_table" => memory::XENMAPSPACE_GRANT_TABLE,
        "XENMAPSPACE_gmfn" => memory::XENMAPSPACE_GMFN,
        "XENMAPSPACE_gmfn_range" => memory::XENMAPSPACE_GMFN_RANGE,
        "XENMAPSPACE_gmfn_foreign" => memory::XENMAPSPACE_GMFN_FOREIGN,
        "XENMAPSPACE_dev_mmio" => memory::XENMAPSPACE_DEV_MMIO,

        // ---- vcpu.rs ----
        "VCPUOP_initialise" => vcpu::VCPUOP_INITIALISE,
        "VCPUOP_up" => vcpu::VCPUOP_UP,
        "VCPUOP_down" => vcpu::VCPUOP_DOWN,
        "VCPUOP_is_up" => vcpu::VCPUOP_IS_UP,
        "VCPUOP_get_runstate_info" => vcpu::VCPUOP_GET_RUNSTATE_INFO,
        "VCPUOP_register_runstate_memory_area" => vcpu::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
        "VCPUOP_set_periodic_timer" => vcpu::VCPUOP_SET_PERIODIC_TIMER,
        "VCPUOP_stop_periodic_timer" => vcpu::VCPUOP_STOP_PERIODIC_TIMER,
        "VCPUOP_set_singleshot_timer" => vcpu::VCPUOP_SET_SINGLESHOT_TIMER,
        "VCPUOP_stop_singleshot_timer" => vcpu::VCPUOP_STOP_SINGLESHOT_TIMER,
        "VCPUOP_register_vcpu_info" => vcpu::VCPUOP_REGISTER_VCPU_INFO,
        "VCPUOP_send_nmi" => vcpu::VCPUOP_SEND_NMI,
        "VCPUOP_get_physid" => vcpu::VCPUOP_GET_PHYSID,
        "VCPUOP_register_vcpu_time_memory_area" => vcpu::VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA,
        "RUNSTATE_running" => vcpu::RUNSTATE_RUNNING,
        "RUNSTATE_runnable" => vcpu::RUNSTATE_RUNNABLE,
        "RUNSTATE_blocked" => vcpu::RUNSTATE_BLOCKED,
        "RUNSTATE_offline" => vcpu::RUNSTATE_OFFLINE,
        "XEN_RUNSTATE_UPDATE" => vcpu::XEN_RUNSTATE_UPDATE,
        "VCPU_SSHOTTMR_future" => vcpu::VCPU_SSHOTTMR_FUTURE,
        "sizeof(struct vcpu_guest_context)" => vcpu::VCPU_GUEST_CONTEXT_SIZE,

        // ---- physdev.rs (physdev.h, nmi.h) ----
        "PHYSDEVOP_IRQ_UNMASK_NOTIFY" => physdev::PHYSDEVOP_IRQ_UNMASK_NOTIFY,
        "PHYSDEVOP_irq_status_query" => physdev::PHYSDEVOP_IRQ_STATUS_QUERY,
        "PHYSDEVOP_set_iopl" => physdev::PHYSDEVOP_SET_IOPL,
        "PHYSDEVOP_set_iobitmap" => physdev::PHYSDEVOP_SET_IOBITMAP,
        "PHYSDEVOP_apic_read" => physdev::PHYSDEVOP_APIC_READ,
        "PHYSDEVOP_apic_write" => physdev::PHYSDEVOP_APIC_WRITE,
        "PHYSDEVOP_alloc_irq_vector" => physdev::PHYSDEVOP_ALLOC_IRQ_VECTOR,
        "PHYSDEVOP_free_irq_vector" => physdev::PHYSDEVOP_FREE_IRQ_VECTOR,
        "PHYSDEVOP_eoi" => physdev::PHYSDEVOP_EOI,
        "PHYSDEVOP_map_pirq" => physdev::PHYSDEVOP_MAP_PIRQ,
        "PHYSDEVOP_unmap_pirq" => physdev::PHYSDEVOP_UNMAP_PIRQ,
        "PHYSDEVOP_manage_pci_add" => physdev::PHYSDEVOP_MANAGE_PCI_ADD,
        "PHYSDEVOP_manage_pci_remove" => physdev::PHYSDEVOP_MANAGE_PCI_REMOVE,
        "PHYSDEVOP_pirq_eoi_gmfn_v1" => physdev::PHYSDEVOP_PIRQ_EOI_GMFN_V1,
        "PHYSDEVOP_restore_msi" => physdev::PHYSDEVOP_RESTORE_MSI,
        "PHYSDEVOP_manage_pci_add_ext" => physdev::PHYSDEVOP_MANAGE_PCI_ADD_EXT,
        "PHYSDEVOP_setup_gsi" => physdev::PHYSDEVOP_SETUP_GSI,
        "PHYSDEVOP_get_free_pirq" => physdev::PHYSDEVOP_GET_FREE_PIRQ,
        "PHYSDEVOP_pci_mmcfg_reserved" => physdev::PHYSDEVOP_PCI_MMCFG_RESERVED,
        "PHYSDEVOP_pci_device_add" => physdev::PHYSDEVOP_PCI_DEVICE_ADD,
        "PHYSDEVOP_pci_device_remove" => physdev::PHYSDEVOP_PCI_DEVICE_REMOVE,
        "PHYSDEVOP_restore_msi_ext" => physdev::PHYSDEVOP_RESTORE_MSI_EXT,
        "PHYSDEVOP_pirq_eoi_gmfn_v2" => physdev::PHYSDEVOP_PIRQ_EOI_GMFN_V2,
        "PHYSDEVOP_dbgp_op" => physdev::PHYSDEVOP_DBGP_OP,
        "PHYSDEVOP_prepare_msix" => physdev::PHYSDEVOP_PREPARE_MSIX,
        "PHYSDEVOP_release_msix" => physdev::PHYSDEVOP_RELEASE_MSIX,
        // The unsuffixed name is v2 for interface versions 4.2 and later (the all-capitals
        // aliases of the other ops end with 4.5 and are not mirrored).
        "PHYSDEVOP_pirq_eoi_gmfn" => physdev::PHYSDEVOP_PIRQ_EOI_GMFN_V2,
        "XENIRQSTAT_needs_eoi" => physdev::XENIRQSTAT_NEEDS_EOI,
        "XENIRQSTAT_shared" => physdev::XENIRQSTAT_SHARED,
        "XENNMI_register_callback" => physdev::XENNMI_REGISTER_CALLBACK,
        "XENNMI_unregister_callback" => physdev::XENNMI_UNREGISTER_CALLBACK,

        // ---- grant_table.rs (grant_table.h) ----
        "GNTTABOP_map_grant_ref" => grant_table::GNTTABOP_MAP_GRANT_REF,
        "GNTTABOP_unmap_grant_ref" => grant_table::GNTTABOP_UNMAP_GRANT_REF,
        "GNTTABOP_setup_table" => grant_table::GNTTABOP_SETUP_TABLE,
        "GNTTABOP_dump_table" => grant_table::GNTTABOP_DUMP_TABLE,
        "GNTTABOP_transfer" => grant_table::GNTTABOP_TRANSFER,
        "GNTTABOP_copy" => grant_table::GNTTABOP_COPY,
        "GNTTABOP_query_size" => grant_table::GNTTABOP_QUERY_SIZE,
        "GNTTABOP_unmap_and_replace" => grant_table::GNTTABOP_UNMAP_AND_REPLACE,
        "GNTTABOP_set_version" => grant_table::GNTTABOP_SET_VERSION,
        "GNTTABOP_get_status_frames" => grant_table::GNTTABOP_GET_STATUS_FRAMES,
        "GNTTABOP_get_version" => grant_table::GNTTABOP_GET_VERSION,
        "GNTTABOP_swap_grant_ref" => grant_table::GNTTABOP_SWAP_GRANT_REF,
        "GNTTABOP_cache_flush" => grant_table::GNTTABOP_CACHE_FLUSH,
        "GTF_invalid" => grant_table::GTF_INVALID,
        "GTF_permit_access" => grant_table::GTF_PERMIT_ACCESS,
        "GTF_accept_transfer" => grant_table::GTF_ACCEPT_TRANSFER,
        "GTF_transitive" => grant_table::GTF_TRANSITIVE,
        "GTF_type_mask" => grant_table::GTF_TYPE_MASK,
        "GTF_readonly" => grant_table::GTF_READONLY,
        "GTF_reading" => grant_table::GTF_READING,
        "GTF_writing" => grant_table::GTF_WRITING,
        "GTF_PWT" => grant_table::GTF_PWT,
        "GTF_PCD" => grant_table::GTF_PCD,
        "GTF_PAT" => grant_table::GTF_PAT,
        "GTF_sub_page" => grant_table::GTF_SUB_PAGE,
        "GTF_transfer_committed" => grant_table::GTF_TRANSFER_COMMITTED,
        "GTF_transfer_completed" => grant_table::GTF_TRANSFER_COMPLETED,
        "GNTTAB_NR_RESERVED_ENTRIES" => grant_table::GNTTAB_NR_RESERVED_ENTRIES,
        "GNTTAB_RESERVED_CONSOLE" => grant_table::GNTTAB_RESERVED_CONSOLE,
        "GNTTAB_RESERVED_XENSTORE" => grant_table::GNTTAB_RESERVED_XENSTORE,
        "GNTTAB_CACHE_CLEAN" => grant_table::GNTTAB_CACHE_CLEAN,
        "GNTTAB_CACHE_INVAL" => grant_table::GNTTAB_CACHE_INVAL,
        "GNTTAB_CACHE_SOURCE_GREF" => grant_table::GNTTAB_CACHE_SOURCE_GREF,
        "GNTMAP_device_map" => grant_table::GNTMAP_DEVICE_MAP,
        "GNTMAP_host_map" => grant_table::GNTMAP_HOST_MAP,
        "GNTMAP_readonly" => grant_table::GNTMAP_READONLY,
        "GNTMAP_application_map" => grant_table::GNTMAP_APPLICATION_MAP,
        "GNTMAP_contains_pte" => grant_table::GNTMAP_CONTAINS_PTE,
        "GNTMAP_guest_avail_mask" => grant_table::GNTMAP_GUEST_AVAIL_MASK,
        "GNTCOPY_source_gref" => grant_table::GNTCOPY_SOURCE_GREF,
        "GNTCOPY_dest_gref" => grant_table::GNTCOPY_DEST_GREF,
        "GNTST_okay" => grant_table::GNTST_OKAY,
        "GNTST_general_error" => grant_table::GNTST_GENERAL_ERROR,
        "GNTST_bad_domain" => grant_table::GNTST_BAD_DOMAIN,
        "GNTST_bad_gntref" => grant_table::GNTST_BAD_GNTREF,
        "GNTST_bad_handle" => grant_table::GNTST_BAD_HANDLE,
        "GNTST_bad_virt_addr" => grant_table::GNTST_BAD_VIRT_ADDR,
        "GNTST_bad_dev_addr" => grant_table::GNTST_BAD_DEV_ADDR,
        "GNTST_no_device_space" => grant_table::GNTST_NO_DEVICE_SPACE,
        "GNTST_permission_denied" => grant_table::GNTST_PERMISSION_DENIED,
        "GNTST_bad_page" => grant_table::GNTST_BAD_PAGE,
        "GNTST_bad_copy_arg" => grant_table::GNTST_BAD_COPY_ARG,
        "GNTST_address_too_big" => grant_table::GNTST_ADDRESS_TOO_BIG,
        "GNTST_eagain" => grant_table::GNTST_EAGAIN,
        "GNTST_no_space" => grant_table::GNTST_NO_SPACE,
        "sizeof(struct grant_entry_v1)" => grant_table::GRANT_ENTRY_V1_SIZE,
        // ---- io/blkif.rs ----
        "BLKIF_OP_READ" => blkif::BLKIF_OP_READ,
        "BLKIF_OP_WRITE" => blkif::BLKIF_OP_WRITE,
        "BLKIF_OP_WRITE_BARRIER" => blkif::BLKIF_OP_WRITE_BARRIER,
        "BLKIF_OP_FLUSH_DISKCACHE" => blkif::BLKIF_OP_FLUSH_DISKCACHE,
        "BLKIF_OP_RESERVED_1" => blkif::BLKIF_OP_RESERVED_1,
        "BLKIF_OP_DISCARD" => blkif::BLKIF_OP_DISCARD,
        "BLKIF_OP_INDIRECT" => blkif::BLKIF_OP_INDIRECT,
        "BLKIF_MAX_SEGMENTS_PER_REQUEST" => blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST,
        "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST" => blkif::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
        "4096 / sizeof(struct blkif_request_segment)" => blkif::BLKIF_SEGS_PER_INDIRECT_FRAME,
        "BLKIF_DISCARD_SECURE" => blkif::BLKIF_DISCARD_SECURE,
        "BLKIF_RSP_EOPNOTSUPP" => blkif::BLKIF_RSP_EOPNOTSUPP,
        "BLKIF_RSP_ERROR" => blkif::BLKIF_RSP_ERROR,
        "BLKIF_RSP_OKAY" => blkif::BLKIF_RSP_OKAY,
        "VDISK_CDROM" => blkif::VDISK_CDROM,
        "VDISK_REMOVABLE" => blkif::VDISK_REMOVABLE,
        "VDISK_READONLY" => blkif::VDISK_READONLY,
        "sizeof(union blkif_sring_entry)" => blkif::BLKIF_RING_ENTRY_SIZE,
        // ---- io/ring.rs (ring.h's DEFINE_RING_TYPES, instantiated by blkif.h) ----
        "offsetof(struct blkif_sring, req_prod)" => offset_of!(SringHeader, req_prod),
        "offsetof(struct blkif_sring, req_event)" => offset_of!(SringHeader, req_event),
        "offsetof(struct blkif_sring, rsp_prod)" => offset_of!(SringHeader, rsp_prod),
        "offsetof(struct blkif_sring, rsp_event)" => offset_of!(SringHeader, rsp_event),
        "offsetof(struct blkif_sring, pvt)" => offset_of!(SringHeader, pvt),
        "sizeof(((struct blkif_sring *)0)->pvt)" => size_of::<[u8; 4]>(),
        "offsetof(struct blkif_sring, __pad)" => offset_of!(SringHeader, _pad),
        "offsetof(struct blkif_sring, ring)" => ring::SRING_ENTRIES_OFFSET,
        "__CONST_RING_SIZE(blkif, 4096)" => ring::ring_size(4096, blkif::BLKIF_RING_ENTRY_SIZE),
        "__CONST_RING_SIZE(blkif, 2 * 4096)" => ring::ring_size(2 * 4096, blkif::BLKIF_RING_ENTRY_SIZE),
        "__CONST_RING_SIZE(blkif, 16 * 4096)" => ring::ring_size(16 * 4096, blkif::BLKIF_RING_ENTRY_SIZE),
        "sizeof(RING_IDX)" => size_of::<ring::RingIdx>(),
    }
}

/// Every `Errno` the crate defines, by its `errno.h` name.
fn errnos() -> Vec<(&'static str, Errno)> {
    vec![
        ("EPERM", Errno::EPERM),
        ("ENOENT", Errno::ENOENT),
        ("ESRCH", Errno::ESRCH),
        ("EINTR", Errno::EINTR),
        ("EIO", Errno::EIO),
        ("ENXIO", Errno::ENXIO),
        ("E2BIG", Errno::E2BIG),
        ("ENOEXEC", Errno::ENOEXEC),
        ("EBADF", Errno::EBADF),
        ("ECHILD", Errno::ECHILD),
        ("EAGAIN", Errno::EAGAIN),
        ("EWOULDBLOCK", Errno::EWOULDBLOCK),
        ("ENOMEM", Errno::ENOMEM),
        ("EACCES", Errno::EACCES),
        ("EFAULT", Errno::EFAULT),
        ("EBUSY", Errno::EBUSY),
        ("EEXIST", Errno::EEXIST),
        ("EXDEV", Errno::EXDEV),
        ("ENODEV", Errno::ENODEV),
        ("ENOTDIR", Errno::ENOTDIR),
        ("EISDIR", Errno::EISDIR),
        ("EINVAL", Errno::EINVAL),
        ("ENFILE", Errno::ENFILE),
        ("EMFILE", Errno::EMFILE),
        ("ENOSPC", Errno::ENOSPC),
        ("EROFS", Errno::EROFS),
        ("EMLINK", Errno::EMLINK),
        ("EDOM", Errno::EDOM),
        ("ERANGE", Errno::ERANGE),
        ("EDEADLK", Errno::EDEADLK),
        ("EDEADLOCK", Errno::EDEADLOCK),
        ("ENAMETOOLONG", Errno::ENAMETOOLONG),
        ("ENOLCK", Errno::ENOLCK),
        ("ENOSYS", Errno::ENOSYS),
        ("ENOTEMPTY", Errno::ENOTEMPTY),
        ("ENODATA", Errno::ENODATA),
        ("ETIME", Errno::ETIME),
        ("EBADMSG", Errno::EBADMSG),
        ("EOVERFLOW", Errno::EOVERFLOW),
        ("EILSEQ", Errno::EILSEQ),
        ("ERESTART", Errno::ERESTART),
        ("ENOTSOCK", Errno::ENOTSOCK),
        ("EMSGSIZE", Errno::EMSGSIZE),
        ("EOPNOTSUPP", Errno::EOPNOTSUPP),
        ("EADDRINUSE", Errno::EADDRINUSE),
        ("EADDRNOTAVAIL", Errno::EADDRNOTAVAIL),
        ("ENOBUFS", Errno::ENOBUFS),
        ("EISCONN", Errno::EISCONN),
        ("ENOTCONN", Errno::ENOTCONN),
        ("ETIMEDOUT", Errno::ETIMEDOUT),
        ("ECONNREFUSED", Errno::ECONNREFUSED),
    ]
}

// ---------------------------------------------------------------------------------------------
// The C side
// ---------------------------------------------------------------------------------------------

/// What the compiled C program reported.
struct Probe {
    /// `sizeof` of `layouts()[i]`.
    sizes: BTreeMap<usize, usize>,
    /// (offset, size) of `layouts()[i].fields[j]`.
    fields: BTreeMap<(usize, usize), (usize, usize)>,
    /// Value of `constants()[i]`.
    consts: BTreeMap<usize, u64>,
    /// Every `XEN_ERRNO(name, value)` of `errno.h`, including the `__XEN__`-only ones.
    errnos: BTreeMap<String, u64>,
    /// Names of all object-like macros defined after including the headers.
    macros: BTreeSet<String>,
}

fn c_program(layouts: &[Layout], consts: &[Const]) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "/* Generated by xen-abi/tests/layout.rs. */");
    let _ = writeln!(c, "#define __XEN_INTERFACE_VERSION__ {XEN_INTERFACE_VERSION}");
    c.push_str("#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n");
    for h in HEADERS {
        let _ = writeln!(c, "#include <{h}>");
    }
    c.push_str(concat!(
        "#if !defined(__x86_64__)\n",
        "#error \"xen-abi mirrors the x86_64 ABI: use an x86_64 C compiler\"\n",
        "#endif\n",
        "#define XABI_S(i, T) printf(\"s %d %zu\\n\", i, sizeof(T));\n",
        "#define XABI_F(i, j, T, f) ",
        "printf(\"f %d %d %zu %zu\\n\", i, j, offsetof(T, f), sizeof(((T *)0)->f));\n",
        "#define XABI_C(i, e) printf(\"c %d %llu\\n\", i, (unsigned long long)(e));\n",
        "int main(void)\n{\n",
    ));
    for (i, l) in layouts.iter().enumerate() {
        let _ = writeln!(c, "    XABI_S({i}, {})", l.c_type);
        for (j, f) in l.fields.iter().enumerate() {
            let _ = writeln!(c, "    XABI_F({i}, {j}, {}, {})", l.c_type, f.c_path);
        }
    }
    for (i, k) in consts.iter().enumerate() {
        let _ = writeln!(c, "    XABI_C({i}, {})", k.c_expr);
    }
    // errno.h is an X-macro list; expand it once more with the Xen-internal entries visible.
    c.push_str(concat!(
        "#define __XEN__\n",
        "#define XEN_ERRNO(name, value) printf(\"e %s %d\\n\", #name, value);\n",
        "#include <xen/errno.h>\n",
        "#undef __XEN__\n",
        "    return 0;\n}\n",
    ));
    c
}

fn compiler() -> (String, Vec<String>) {
    let cc = std::env::var("CC").unwrap_or_default();
    let mut words = cc.split_whitespace().map(str::to_owned);
    match words.next() {
        Some(prog) => (prog, words.collect()),
        None => ("cc".to_owned(), Vec::new()),
    }
}

/// Why the C side could not be probed. `keep_dir` when the generated program is at fault, so
/// that it can be inspected; a missing compiler or missing headers leave nothing behind.
struct ProbeError {
    message: String,
    keep_dir: bool,
}

impl From<String> for ProbeError {
    fn from(message: String) -> Self {
        ProbeError { message, keep_dir: false }
    }
}

/// Runs the C compiler with `args`; a missing compiler or missing headers become the one-line
/// setup hint.
fn run_cc(dir: &Path, args: &[&str]) -> Result<Output, ProbeError> {
    let (cc, cc_args) = compiler();
    let out = Command::new(&cc)
        .args(&cc_args)
        .args(["-std=gnu11", "-O0"])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run the C compiler `{cc}` ({e}); {SETUP_HINT}"))?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // gcc: "layout.c:5:10: fatal error: xen/xen.h: No such file or directory";
    // clang: "layout.c:5:10: fatal error: 'xen/xen.h' file not found".
    let missing_header = stderr
        .lines()
        .filter(|l| l.contains("No such file") || l.contains("file not found"))
        .find_map(|l| l.split_once("error: ").map(|(_, what)| what.trim().to_owned()));
    if let Some(what) = missing_header {
        return Err(format!("C headers missing ({what}); {SETUP_HINT}").into());
    }
    Err(ProbeError {
        message: format!(
            "`{cc} {}` failed in {} (kept for inspection):\n{stderr}",
            args.join(" "),
            dir.display()
        ),
        keep_dir: true,
    })
}

/// Compiles and runs the C program in a fresh directory under the system temp dir (never in
/// the source tree) and removes it afterwards.
fn run_probe() -> Result<Probe, String> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir: PathBuf = std::env::temp_dir().join(format!("xen-abi-layout-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let result = probe_in(&dir);
    if !matches!(&result, Err(e) if e.keep_dir) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.map_err(|e| e.message)
}

fn probe_in(dir: &Path) -> Result<Probe, ProbeError> {
    std::fs::write(dir.join("layout.c"), c_program(&layouts(), &constants()))
        .map_err(|e| format!("write {}/layout.c: {e}", dir.display()))?;
    let defines = run_cc(dir, &["-dM", "-E", "layout.c"])?;
    run_cc(dir, &["-Wall", "-o", "layout", "layout.c"])?;
    let run = Command::new(dir.join("layout"))
        .output()
        .map_err(|e| format!("run {}/layout: {e}", dir.display()))?;
    if !run.status.success() {
        return Err(ProbeError {
            message: format!("{}/layout failed: {}", dir.display(), run.status),
            keep_dir: true,
        });
    }

    let mut probe = Probe {
        sizes: BTreeMap::new(),
        fields: BTreeMap::new(),
        consts: BTreeMap::new(),
        errnos: BTreeMap::new(),
        macros: BTreeSet::new(),
    };
    for line in String::from_utf8_lossy(&defines.stdout).lines() {
        // "#define NAME value" or "#define NAME(args) value": keep object-like macros.
        if let Some(name) = line.strip_prefix("#define ").and_then(|r| r.split(' ').next()) {
            if !name.contains('(') {
                probe.macros.insert(name.to_owned());
            }
        }
    }
    let stdout = String::from_utf8_lossy(&run.stdout);
    for line in stdout.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let n = |i: usize| -> Result<u64, String> {
            w.get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("unexpected line from the C program: {line:?}"))
        };
        match w[0] {
            "s" => {
                probe.sizes.insert(n(1)? as usize, n(2)? as usize);
            }
            "f" => {
                let key = (n(1)? as usize, n(2)? as usize);
                probe.fields.insert(key, (n(3)? as usize, n(4)? as usize));
            }
            "c" => {
                probe.consts.insert(n(1)? as usize, n(2)?);
            }
            "e" if w.len() == 3 => {
                probe.errnos.insert(w[1].to_owned(), n(2)?);
            }
            _ => return Err(format!("unexpected line from the C program: {line:?}").into()),
        }
    }
    Ok(probe)
}

/// The C side, built once per test binary.
fn probe() -> &'static Probe {
    static PROBE: OnceLock<Result<Probe, String>> = OnceLock::new();
    match PROBE.get_or_init(run_probe) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn report(what: &str, mismatches: Vec<String>) {
    if !mismatches.is_empty() {
        panic!(
            "{} {what} of xen-abi disagree with the Xen headers in /usr/include/xen:\n  {}",
            mismatches.len(),
            mismatches.join("\n  ")
        );
    }
}

fn show(v: u64) -> String {
    if v < 10 {
        format!("{v}")
    } else {
        format!("{v} ({v:#x})")
    }
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

#[test]
fn struct_sizes_and_field_offsets_match_the_xen_headers() {
    let probe = probe();
    let mut bad = Vec::new();
    for (i, l) in layouts().iter().enumerate() {
        match probe.sizes.get(&i) {
            Some(&c) if c == l.size => {}
            Some(&c) => {
                bad.push(format!("size of {}: Rust {}, C sizeof({}) = {c}", l.rust, l.size, l.c_type))
            }
            None => bad.push(format!("the C program printed no size for {}", l.c_type)),
        }
        for (j, f) in l.fields.iter().enumerate() {
            let name = format!("{}.{} (C {}.{})", l.rust, f.rust, l.c_type, f.c_path);
            match probe.fields.get(&(i, j)) {
                Some(&(c_off, c_size)) => {
                    if c_off != f.offset {
                        bad.push(format!("{name}: offset Rust {}, C {c_off}", f.offset));
                    }
                    if c_size != f.size {
                        bad.push(format!("{name}: size Rust {}, C {c_size}", f.size));
                    }
                }
                None => bad.push(format!("{name}: the C program printed nothing")),
            }
        }
    }
    report("struct layouts", bad);
}

#[test]
fn constants_match_the_xen_headers() {
    let probe = probe();
    let mut bad = Vec::new();
    for (i, k) in constants().iter().enumerate() {
        match probe.consts.get(&i) {
            Some(&c) if c == k.value => {}
            Some(&c) => bad.push(format!("{} = {}, but C {} = {}", k.rust, show(k.value), k.c_expr, show(c))),
            None => bad.push(format!("{}: the C program printed nothing", k.c_expr)),
        }
    }
    report("constants", bad);
}

#[test]
fn every_header_constant_of_a_mirrored_family_is_mirrored() {
    let probe = probe();
    let listed: BTreeSet<&str> = constants().iter().map(|k| k.c_expr).collect();
    let mut bad: Vec<String> = probe
        .macros
        .iter()
        .filter(|m| MIRRORED_FAMILIES.iter().any(|f| m.starts_with(f)))
        .filter(|m| !NOT_MIRRORED.iter().any(|(prefix, _)| m.starts_with(prefix)))
        .filter(|m| !listed.contains(m.as_str()))
        .map(|m| format!("{m} is defined by the headers but not mirrored in xen-abi/tests/layout.rs"))
        .collect();
    // Guards the check above against a `-dM` listing that parsed as empty: every plain name in
    // the table must be one of the macros found.
    let is_name = |e: &str| e.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    for name in listed.iter().filter(|e| is_name(e)) {
        if !probe.macros.contains(*name) {
            bad.push(format!("{name} is in the table but `cc -dM -E` did not list it"));
        }
    }
    report("constant families", bad);
}

#[test]
fn errno_values_match_the_xen_headers_both_ways() {
    let probe = probe();
    let rust: BTreeMap<&str, u64> = errnos().into_iter().map(|(n, e)| (n, c_value(e.0))).collect();
    let mut bad = Vec::new();
    for (name, &c) in &probe.errnos {
        match rust.get(name.as_str()) {
            Some(&r) if r == c => {}
            Some(&r) => bad.push(format!("Errno::{name} = {r}, but errno.h says {c}")),
            None => bad.push(format!("errno.h defines {name} = {c}, xen-abi has no Errno::{name}")),
        }
    }
    for name in rust.keys() {
        if !probe.errnos.contains_key(*name) {
            bad.push(format!("Errno::{name} is not in errno.h"));
        }
    }
    report("errno values", bad);
}

#[test]
fn hypercall_names_are_xens_names() {
    let probe = probe();
    let mut bad = Vec::new();
    for (i, k) in constants().iter().enumerate() {
        let Some(xen_name) = k.c_expr.strip_prefix("__HYPERVISOR_") else {
            continue;
        };
        if xen_name.starts_with("VIRT_") {
            continue;
        }
        // On x86, arch_0 is the machine-check hypercall (`__HYPERVISOR_mca`, xen-mca.h).
        let expected = if xen_name == "arch_0" { "mca" } else { xen_name };
        let nr = probe.consts.get(&i).copied().unwrap_or(k.value);
        if hypercall::name(nr) != expected {
            bad.push(format!("hypercall::name({nr}) = {:?}, Xen calls it {expected:?}", hypercall::name(nr)));
        }
    }
    report("hypercall names", bad);
}
