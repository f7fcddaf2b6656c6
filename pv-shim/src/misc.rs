//! The small hypercalls: multicall, vm_assist, physdev_op, nmi_op, stack_switch,
//! fpu_taskswitch, set_segment_base, set/get_debugreg.
