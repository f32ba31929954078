# Post-training quantization of BEVFormer-tiny to W4A6 (no training): the FP teacher is evaluated, then every stage
# is set to W4A6, calibrated on 32 training batches per GPU and evaluated again (phases.json holds both NDS/mAP).
#   tools/dist_train.sh configs/qdbev/qdbev_tiny_ptq.py 8
_base_ = ['./qdbev_tiny_progressive_w4a6.py']

qat_schedule = dict(_delete_=True, factory='ptq', w_bits=4, a_bits=6, calib_batches=32)
