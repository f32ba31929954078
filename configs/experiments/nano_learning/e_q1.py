# No temporal queue (queue_length 1) and twice the learning rate.
_base_ = ['./e_base.py']
train_dataloader = dict(dataset=dict(queue_length=1))
optim_wrapper = dict(optimizer=dict(lr=2e-3))
