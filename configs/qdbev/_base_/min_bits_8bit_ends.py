# Beyond the paper (issue 8): at W4A4 keep the layers that suffer most at 8 bits, as deployment toolkits do: the first
# convolution (raw pixels in) and the class/box branches (the outputs). qdbev.quant's `min_bits` floors them at 8/8
# whatever widths the schedule sets (32 still means float).
min_bits_8bit_ends = [
    dict(modules=['img_backbone.conv1', 'pts_bbox_head.cls_branches', 'pts_bbox_head.reg_branches'], w_bits=8,
         a_bits=8)
]
