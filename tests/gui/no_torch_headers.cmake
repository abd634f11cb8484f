# Fails when any widgets object was compiled with an ATen, torch or c10 header. Reads the header
# dependencies Ninja recorded (`ninja -t deps`), so it checks what the compiler really included.
# Usage: cmake -DNINJA=<ninja> -DBUILD_DIR=<build> -P no_torch_headers.cmake
execute_process(COMMAND ${NINJA} -C ${BUILD_DIR} -t deps OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ninja -t deps failed")
endif()
string(REPLACE "\n" ";" lines "${out}")
set(current "")
set(objects 0)
foreach(l IN LISTS lines)
  if(l MATCHES "^([^ ].*): #deps")  # every output (.o, and the precompiled header's .gch) starts a list
    set(current "${CMAKE_MATCH_1}")
    if(current MATCHES "kumihimo_widgets\\.dir")
      math(EXPR objects "${objects} + 1")
    endif()
  elseif(current MATCHES "kumihimo_widgets\\.dir" AND l MATCHES "/(ATen|torch|c10)/")
    message(FATAL_ERROR "${current} includes a torch header:${l}")
  endif()
endforeach()
if(objects EQUAL 0)
  message(FATAL_ERROR "no widgets objects in ninja's deps log (build kumihimo_widgets first)")
endif()
message(STATUS "${objects} widgets objects, none includes ATen/torch/c10")
