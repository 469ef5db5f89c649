# Sourced by the bench scripts: one tgtd target with LUN 1 on a backing file,
# with the login parameters every bench uses (tgt's defaults move data in
# 8 KiB pieces with an R2T each). Needs the caller's adm() (tgtadm against
# its tgtd) and the globals NEXT_TID and TIDS (targets to delete at exit).
#
#   bench_lun IQN BACKING thin|thick
bench_lun() {
  local iqn="$1" backing="$2" kind="$3" tid=$NEXT_TID
  NEXT_TID=$((NEXT_TID + 1))
  TIDS+=("$tid")
  adm --op new --mode target --tid "$tid" -T "$iqn"
  adm --op new --mode logicalunit --tid "$tid" --lun 1 -b "$backing"
  [[ "$kind" == thin ]] &&
    adm --op update --mode logicalunit --tid "$tid" --lun 1 --params thin_provisioning=1
  adm --op update --mode target --tid "$tid" -n MaxRecvDataSegmentLength -v 262144
  adm --op update --mode target --tid "$tid" -n FirstBurstLength -v 262144
  adm --op update --mode target --tid "$tid" -n MaxBurstLength -v 1048576
  adm --op update --mode target --tid "$tid" -n InitialR2T -v No
  adm --op bind --mode target --tid "$tid" -I ALL
}
