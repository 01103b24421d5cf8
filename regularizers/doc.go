// Package regularizers owns penalties that steer weights toward structures
// that can be removed: group lasso over rows, columns, filters or channels,
// and L1, applied as proximal steps so that groups and weights reach exactly
// zero; and L2, applied as a gradient term.
//
// A proximal step follows the optimizer's update with step size lr·λ: it is
// the exact minimiser of ½‖w − u‖² + lr·λ·penalty(w) around the updated
// weights u, which is what lets groups land on zero rather than hover near it.
package regularizers
